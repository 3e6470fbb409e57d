"""Backup repositories: on-disk formats (packs, snapshots), the repository and its lock."""
