"""Compression: each step reads an artifact and writes a new one."""
