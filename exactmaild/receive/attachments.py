"""What happens to attachments of received mail: `receive.attachments` keep | strip | extract.

Owns the transformation of a received message before it enters the Maildir:

- keep: the message is delivered byte for byte as the server sent it;
- strip: every attachment is replaced by a short text/plain note naming the
  file and its size;
- extract: every attachment up to `receive.max_attachment_size` is written
  into `receive.attachments_dir` and replaced by a note giving the saved
  path; a larger one stays in the message and a note says why it was not
  saved.

An attachment's name comes from the sender, so it is never trusted as a
path: only its last component is used, control characters, leading dots and
characters Windows file shares refuse are removed, the length is capped,
and the file is created with O_EXCL|O_NOFOLLOW relative to the directory
(an existing file or symlink is never written through: a "-1", "-2"...
suffix is added instead).
"""

from __future__ import annotations

import itertools
import mimetypes
import os
import secrets
import unicodedata
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path

from exactmaild.config.model import Receive
from exactmaild.store.durable import write_new

MAX_NAME_BYTES = 120  # well under every filesystem's 255, leaving room for a suffix
_WINDOWS_RESERVED = set('<>:"|?*')


@dataclass(frozen=True)
class Result:
    """The message to deliver, and what was done to its attachments."""

    data: bytes
    extracted: tuple[Path, ...] = ()
    stripped: tuple[str, ...] = ()
    kept_oversize: tuple[str, ...] = ()


def process(data: bytes, receive: Receive) -> Result:
    """Apply `receive.attachments` to one raw message (bytes in, bytes out)."""
    if receive.attachments == "keep":
        return Result(data)
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    job = _Job(receive)
    if msg.get_content_maintype() == "multipart":
        job.walk(msg)
    elif _is_attachment(msg):
        note, keep = job.handle(msg)
        if not keep:
            # The whole body was the attachment: the headers stay, the body becomes the note.
            msg.set_content(note, charset="utf-8", cte="8bit")
    if not (job.extracted or job.stripped or job.kept):
        return Result(data)  # nothing touched: deliver the original bytes, not a re-rendering
    linesep = "\r\n" if b"\r\n" in data[:4096] else "\n"
    out = msg.as_bytes(policy=policy.default.clone(linesep=linesep, refold_source="none"))
    return Result(out, tuple(job.extracted), tuple(job.stripped), tuple(job.kept))


class _Job:
    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.extracted: list[Path] = []
        self.stripped: list[str] = []
        self.kept: list[str] = []

    @property
    def directory(self) -> Path:
        return self.receive.attachments_dir or self.receive.maildir.parent / "attachments"

    def walk(self, container: Message) -> None:
        parts: list[Message | str] = []
        for part in container.get_payload():
            assert isinstance(part, Message)
            if part.get_content_maintype() == "multipart":
                self.walk(part)
                parts.append(part)
            elif _is_attachment(part):
                note, keep = self.handle(part)
                if keep:
                    parts.append(part)
                parts.append(_note_part(note))
            else:
                parts.append(part)
        container.set_payload(parts)

    def handle(self, part: Message) -> tuple[str, bool]:
        """The note for `part`, and whether the part itself stays in the message."""
        payload = _payload(part)
        size = len(payload)
        shown = _display_name(part)
        if self.receive.attachments == "strip":
            self.stripped.append(shown)
            return (
                f"[Attachment removed: {shown} ({_human(size)}). "
                "This mailbox is set to strip attachments (receive.attachments: strip).]\n",
                False,
            )
        if size > self.receive.max_attachment_size:
            self.kept.append(shown)
            return (
                f"[Attachment {shown} ({_human(size)}) is larger than "
                f"receive.max_attachment_size ({_human(self.receive.max_attachment_size)}): "
                f"it was left in this message and not saved to {self.directory}.]\n",
                True,
            )
        path = save_attachment(self.directory, _raw_name(part), payload)
        self.extracted.append(path)
        return f"[Attachment {shown} ({_human(size)}) was saved as {path}]\n", False


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    # A file name without any disposition is an attachment in practice
    # (old mailers); an inline part with a name (an image in HTML) is body.
    return disposition is None and part.get_filename() is not None


def _payload(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0].as_bytes()
    raw = part.get_payload(decode=True)
    return raw if isinstance(raw, bytes) else b""


def _raw_name(part: Message) -> str | None:
    name = part.get_filename()
    if name:
        return str(name)
    ext = mimetypes.guess_extension(part.get_content_type()) or ".bin"
    return f"attachment{ext}"


def _display_name(part: Message) -> str:
    return safe_filename(_raw_name(part))


def _note_part(text: str) -> EmailMessage:
    note = EmailMessage()
    # 8bit, not quoted-printable: the note stays readable in the raw file
    # (the Maildir is local; its lines stay far below the 998-octet limit).
    note.set_content(text, charset="utf-8", cte="8bit")
    return note


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def safe_filename(name: str | None, *, fallback: str = "attachment") -> str:
    """A name that is one harmless file name in a directory, whatever the sender wrote."""
    text = unicodedata.normalize("NFC", name or "")
    # Only the last path component, for both separators ("..\\..\\x", "../../x").
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    # Control, format and unassigned characters (NUL, newlines, bidi overrides).
    text = "".join(
        "_" if ch in _WINDOWS_RESERVED else ch
        for ch in text
        if not unicodedata.category(ch).startswith("C")
    )
    # No hidden files and no "." or "..": leading dots go; trailing dots and
    # spaces go too (Windows shares drop them silently, making names collide).
    text = text.strip().lstrip(".").strip().rstrip(". ")
    if not text:
        text = fallback
    return _cap(text, MAX_NAME_BYTES)


def _cap(name: str, limit: int) -> str:
    if len(name.encode()) <= limit:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext.encode()) > 16:
        stem, ext = name, ""
    room = limit - len(ext.encode())
    cut = stem.encode()[:room].decode(errors="ignore")
    return cut + ext


def save_attachment(directory: Path, name: str | None, payload: bytes) -> Path:
    """Write `payload` as a new file in `directory` under a safe, unused name; never overwrites."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    safe = safe_filename(name)
    stem, ext = os.path.splitext(safe)
    if not stem:
        stem, ext = safe, ""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i in itertools.count():
            if i == 0:
                candidate = safe
            elif i < 1000:
                candidate = _cap(f"{stem}-{i}", MAX_NAME_BYTES - len(ext.encode())) + ext
            else:
                candidate = _cap(f"{stem}-{secrets.token_hex(6)}", MAX_NAME_BYTES) + ext
            try:
                # Relative to the directory's fd, never following a symlink,
                # and only if no such name exists: no traversal, no overwrite.
                write_new(candidate, payload, 0o640, dir_fd=dfd)
            except FileExistsError:
                continue
            # The note in the message names this file: it must exist once the message does.
            os.fsync(dfd)
            return directory / candidate
    finally:
        os.close(dfd)
    raise AssertionError("unreachable")  # pragma: no cover
