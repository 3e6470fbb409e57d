"""SMB shares: the store (store.py), its operations as compound requests (wire.py), the
request templates (packets.py), the connection that carries them (channel.py), and where a
URL points and who logs in (credentials.py)."""

from orbit_fast.backends.smb.credentials import parse_url, read_credentials
from orbit_fast.backends.smb.store import SMBStore

__all__ = ["SMBStore", "parse_url", "read_credentials"]
