"""Core protocol nodes that need no hardware (RAM-backed), registered with the drivers."""
