"""An smbprotocol Connection that also carries raw requests: headers packed with struct,
signed through `cryptography` on whole buffers, replies handed back as bytes.

smbprotocol keeps what is not hot: negotiation, authentication, the session's signing and
encryption keys, tree connects, keep-alive echoes and the requests smbclient itself sends
(those still go through its `Structure` objects, unchanged). Its receive thread is replaced
by one that reads each reply header with struct: for our raw requests it verifies the
signature and hands over the body; for smbclient's requests it does what smbprotocol's own
thread does. That thread, parsing and re-packing every reply header to verify it, was a third
of the CPU of a small file's requests.

Requests are sent as smbprotocol sends them: message ids from the connection's sequence
window under its lock, credit charges by size ([MS-SMB2] 3.2.4.1.5), related compounds
([MS-SMB2] 3.2.4.1.4) padded to 8 bytes, each message signed ([MS-SMB2] 3.1.4.1) or the
whole frame encrypted when the session or share asks for it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import select
import struct
import threading
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import aead, algorithms
from smbprotocol.connection import Connection, Dialects, SigningAlgorithms, SMB2TransformHeader
from smbprotocol.exceptions import SMBConnectionClosed, SMBException
from smbprotocol.header import Smb2Flags, SMB2HeaderResponse
from smbprotocol.transport import Tcp

from orbit_fast.backends.smb import packets as p

_HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")
_REPLY = struct.Struct("<IHHII")  # status, command, credits granted, flags, next command
_ZERO_SIGNATURE = b"\x00" * 16
_WAIT_SLICE = 10.0  # seconds between checks that the receive thread is alive
_CREDITS_WANTED = 512  # ask for more credits until the window is this wide

Message = tuple[int, bytes, Any]  # command, body, payload after the body (b"" or a buffer)


class NoCredits(SMBException):
    """The server has not granted the credits a compound needs; send it in smaller turns."""


class Reply:
    """One raw request's final reply. `status` and `body` (from the StructureSize field on)
    are set by the receive thread before `done` is."""

    __slots__ = ("message_id", "command", "status", "body", "done", "async_id", "response",
                 "related_ids", "session_id")  # fmt: skip

    def __init__(self, message_id: int, command: int, session_id: int) -> None:
        self.message_id = message_id
        self.command = command
        self.status = -1
        self.body: memoryview = memoryview(b"")
        self.done = threading.Event()
        self.async_id: bytes | None = None
        self.response = None  # what smbprotocol looks at on outstanding requests
        self.related_ids: list[int] = []
        self.session_id = session_id


def credit_charge(command: int, body: bytes, payload: Any) -> int:
    """Credits a request costs ([MS-SMB2] 3.1.5.2): one per 64 KiB sent or asked for."""
    if command == p.READ:
        size = struct.unpack_from("<I", body, 4)[0]
    elif command == p.WRITE:
        size = len(payload)
    elif command == p.QUERY_DIRECTORY:
        size = struct.unpack_from("<I", body, 28)[0]
    else:
        return 1
    return max(1, (int(size) - 1) // 65536 + 1)


class Channel(Connection):
    """A Connection (smbprotocol) with `exchange` for raw requests."""

    # ---- sending --------------------------------------------------------------------------

    def _signer(self, key: bytes) -> Any:
        """A function (header, body, payload, padding, message id) -> 16-byte signature."""
        if self.dialect >= Dialects.SMB_3_1_1 and self.signing_algorithm_id is not None:
            algo = self.signing_algorithm_id
        elif self.dialect >= Dialects.SMB_3_0_0:
            algo = SigningAlgorithms.AES_CMAC
        else:
            algo = SigningAlgorithms.HMAC_SHA256
        if algo == SigningAlgorithms.AES_GMAC:
            gcm = aead.AESGCM(key)

            def gmac(parts: Sequence[Any], message_id: int, response: bool) -> bytes:
                nonce = struct.pack("<QI", message_id, 1 if response else 0)
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                return bytes(gcm.encrypt(nonce, b"", data))

            return gmac
        if algo == SigningAlgorithms.AES_CMAC:
            aes = algorithms.AES(key)

            def aes_cmac(parts: Sequence[Any], message_id: int, response: bool) -> bytes:
                c = cmac.CMAC(aes)
                for part in parts:
                    c.update(part)
                return bytes(c.finalize())

            return aes_cmac

        def sha256(parts: Sequence[Any], message_id: int, response: bool) -> bytes:
            h = hmac.new(key, digestmod=hashlib.sha256)
            for part in parts:
                h.update(part)
            return h.digest()[:16]

        return sha256

    def signer(self, session: Any) -> Any:
        cached = getattr(session, "_orbit_signer", None)
        if cached is None or cached[0] != session.signing_key:
            cached = (session.signing_key, self._signer(session.signing_key))
            session._orbit_signer = cached
        return cached[1]

    def exchange(self, session: Any, tree: Any, messages: Sequence[Message],
                 related: bool = True) -> list[Reply]:  # fmt: skip
        """Send `messages` as one frame (a related compound when there are several) and wait
        for every reply; the replies in order. NoCredits if the window is too small."""
        return self.wait(self.send_raw(session, tree, messages, related))

    def send_raw(self, session: Any, tree: Any, messages: Sequence[Message],
                 related: bool = True) -> list[Reply]:  # fmt: skip
        charges = [credit_charge(c, b, d) for c, b, d in messages]
        with self.sequence_lock:
            low, high = self.sequence_window["low"], self.sequence_window["high"]
            if sum(charges) > high - low:
                raise NoCredits(f"{sum(charges)} credits needed, {high - low} granted")
            self.sequence_window["low"] = low + sum(charges)
        ask = _CREDITS_WANTED > high - low
        sign = session.signing_required and session.signing_key
        signer = self.signer(session) if sign else None
        tree_id = tree.tree_connect_id
        session_id = session.session_id
        encrypt = session.encrypt_data or tree.encrypt_data
        frame: list[Any] = []
        replies = []
        mid = low
        last = len(messages) - 1
        for i, ((command, body, payload), charge) in enumerate(zip(messages, charges, strict=True)):
            size = 64 + len(body) + len(payload)
            pad = b"" if i == last else b"\x00" * (-size % 8)
            flags = (p.FLAG_RELATED if related and i else 0) | (p.FLAG_SIGNED if sign else 0)
            flags |= Smb2Flags.SMB2_FLAGS_DFS_OPERATIONS if tree.is_dfs_share else 0
            header = _HEADER.pack(b"\xfeSMB", 64, charge, 0, command,
                                  charge + (8 if ask else 0), flags,
                                  0 if i == last else size + len(pad), mid, 0, tree_id,
                                  session_id, _ZERO_SIGNATURE)  # fmt: skip
            if signer is not None:
                parts = (header, body, payload, pad) if payload else (header, body, pad)
                header = header[:48] + signer(parts, mid, False)
            frame += (header, body, payload, pad) if payload else (header, body, pad)
            reply = Reply(mid, command, session_id)
            self.outstanding_requests[mid] = reply  # before sending: the reply may be quick
            replies.append(reply)
            mid += charge
        if encrypt:
            frame = [self._encrypt(b"".join(frame), session).pack()]
        self._check_worker_running()
        self._send_frame(frame)
        return replies

    def _send_frame(self, frame: list[Any]) -> None:
        """Direct TCP framing ([MS-SMB2] 2.1): a 4-byte big-endian length, then the frame,
        in one sendmsg (two sends would meet Nagle's algorithm and a delayed ACK: 40 ms)."""
        transport: Tcp = self.transport
        size = sum(len(part) for part in frame)
        if size > transport.MAX_SIZE:
            raise ValueError(f"an SMB frame of {size} bytes is over the transport's limit")
        parts = [struct.pack(">I", size), *frame]
        with transport._sock_lock:
            sock = transport._sock
            sent = sock.sendmsg(parts)
            if sent < size + 4:  # a partial send: the rest as one buffer
                sock.sendall(memoryview(b"".join(parts))[sent:])

    def wait(self, replies: list[Reply]) -> list[Reply]:
        for reply in replies:
            while not reply.done.wait(_WAIT_SLICE):
                self._check_worker_running()
            self._check_worker_running()
            if reply.status < 0:  # the thread died: its error, or "closed"
                raise SMBConnectionClosed("the SMB connection closed while waiting for a reply")
        return replies

    # ---- receiving ------------------------------------------------------------------------

    def _process_message_thread(self) -> None:
        """smbprotocol's receive loop, with raw replies kept raw (see the module docstring)."""
        try:
            while True:
                try:
                    b_msg = self._recv_frame(self._receive_timeout)
                except TimeoutError as ex:
                    if self._keep_alive():
                        raise SMBConnectionClosed(
                            "Connection timed out. Server did not respond within timeout."
                        ) from ex
                    continue
                if not b_msg:
                    return
                encrypted = b_msg[:4] == b"\xfdSMB"
                if encrypted:
                    b_msg = self._decrypt_frame(b_msg)
                self._deliver(b_msg, encrypted)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting callers, as smbprotocol
            self._t_exc = exc
            self.disconnect(False)
        finally:
            for request in list(self.outstanding_requests.values()):
                if isinstance(request, Reply):
                    request.done.set()
                else:
                    request.response_event.set()

    def _recv_frame(self, timeout: float) -> bytearray | None:
        """One Direct TCP frame, received into one buffer (smbprotocol's Tcp.recv asks the
        socket for the whole remaining length on every call, allocating that much each time,
        and copies twice: most of the CPU of a large read)."""
        transport: Tcp = self.transport
        head = self._recv_into(transport, bytearray(4), timeout)
        if head is None:
            return None
        return self._recv_into(transport, bytearray(struct.unpack(">I", head)[0]), timeout)

    @staticmethod
    def _recv_into(transport: Tcp, buf: bytearray, timeout: float) -> bytearray | None:
        view, got = memoryview(buf), 0
        while got < len(buf):
            with transport._close_lock:  # as Tcp._recv: close() waits until we are out
                if not transport.connected:
                    return None
                sock = transport._sock
                if not select.select([sock], [], [], max(timeout, 1))[0]:
                    raise TimeoutError(f"recv idle for {timeout:.0f}s ({got}/{len(buf)} bytes)")
                try:
                    n = sock.recv_into(view[got:])
                except OSError as e:
                    if e.errno not in (errno.ESHUTDOWN, errno.ECONNRESET, errno.ECONNABORTED):
                        raise
                    n = 0
            if n == 0:
                transport.close()
                return None
            got += n
        return buf

    def _decrypt_frame(self, b_msg: bytearray) -> bytearray:
        msg = SMB2TransformHeader()
        msg.unpack(b_msg)
        return bytearray(self._decrypt(msg))

    def _keep_alive(self) -> bool:
        """smbprotocol's idle handling: True if an echo sent earlier is still unanswered
        (the server is gone), else send an echo on every session."""
        from smbprotocol.connection import Commands, SMB2Echo

        for r in list(self.outstanding_requests.values()):
            if isinstance(r, Reply):
                continue
            if (r.response is None and r.message["command"].get_value() == Commands.SMB2_ECHO
                    and r.message["reserved"].get_value() == 1):  # fmt: skip
                return True
        for sid in list(self.session_table.keys()):
            req = self.send(SMB2Echo(), sid=sid)
            req.message["reserved"] = 1
        return False

    def _deliver(self, frame: bytearray, encrypted: bool) -> None:
        at = 0
        while True:
            status, command, granted, flags, nxt = _REPLY.unpack_from(frame, at + 8)
            end = at + nxt if nxt else len(frame)
            (message_id,) = struct.unpack_from("<Q", frame, at + 24)
            request = self.outstanding_requests[message_id]
            if granted == 0 and not self.supports_multi_credit:
                granted = 1
            with self.sequence_lock:
                self.sequence_window["high"] += granted
            if isinstance(request, Reply):
                self._deliver_raw(request, frame, at, end, status, flags, encrypted)
            else:
                self._deliver_smbprotocol(request, bytes(frame[at:end]), encrypted)
            if not nxt:
                return
            at = end

    def _deliver_raw(self, reply: Reply, frame: bytearray, at: int, end: int, status: int,
                     flags: int, encrypted: bool) -> None:  # fmt: skip
        if status == p.STATUS_PENDING:  # an interim reply: the final one follows
            if flags & p.FLAG_ASYNC:
                reply.async_id = bytes(frame[at + 32 : at + 40])
            return
        if not encrypted and flags & p.FLAG_SIGNED:
            session = self.session_table.get(reply.session_id)
            if session is None or not session.signing_key:
                raise SMBException(f"no session {reply.session_id} to verify a reply with")
            # Verified in place: the signature field zeroed in the frame (our own buffer), so
            # a 1 MiB READ reply is never copied to be signed.
            got = bytes(frame[at + 48 : at + 64])
            frame[at + 48 : at + 64] = _ZERO_SIGNATURE
            want = self.signer(session)((memoryview(frame)[at:end],), reply.message_id, True)
            if not hmac.compare_digest(got, want):
                raise SMBException(f"the server's signature of message {reply.message_id} "
                                   "does not verify")  # fmt: skip
        elif not encrypted and reply.session_id and self._signing_required(reply.session_id):
            raise SMBException(f"the server sent message {reply.message_id} unsigned")
        reply.status = status
        reply.body = memoryview(frame)[at + 64 : end]  # no copy: a READ's data stays put
        self.outstanding_requests.pop(reply.message_id, None)
        reply.done.set()

    def _signing_required(self, session_id: int) -> bool:
        session = self.session_table.get(session_id)
        return bool(session is not None and session.signing_required and session.signing_key)

    def _deliver_smbprotocol(self, request: Any, b_header: bytes, encrypted: bool) -> None:
        """What smbprotocol's own receive thread does with a reply to one of its requests."""
        from smbprotocol.connection import Commands, NtStatus

        header = SMB2HeaderResponse()
        header.unpack(b_header)
        message_id = header["message_id"].get_value()
        command = header["command"].get_value()
        if command == Commands.SMB2_SESSION_SETUP:
            session_id = header["session_id"].get_value()
        else:
            session_id = request.session_id
        if not encrypted:
            self.verify_signature(header, session_id)
        status = header["status"].get_value()
        if command == Commands.SMB2_NEGOTIATE:
            self.preauth_integrity_hash_value.append(b_header)
        elif command == Commands.SMB2_SESSION_SETUP and \
                status == NtStatus.STATUS_MORE_PROCESSING_REQUIRED:  # fmt: skip
            self.preauth_integrity_session_hash_value[message_id].append(b_header)
        with request.response_event_lock:
            if header["flags"].has_flag(Smb2Flags.SMB2_FLAGS_ASYNC_COMMAND):
                request.async_id = b_header[32:40]
            request.response = header
            request.response_event.set()
            if request.message["reserved"].get_value() == 1:  # our keep-alive echo
                self.outstanding_requests.pop(message_id, None)
