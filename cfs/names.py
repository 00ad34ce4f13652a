"""Validation of names that come from people: volume names and file names."""

from __future__ import annotations

import re

from cfs.errors import InvalidName, NameTooLong

NAME_MAX = 255

_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def validate_volume_name(name: str) -> str:
    """Return ``name`` if it is a usable volume name, else raise ``InvalidName`` saying why.

    The alphabet is Docker's (letters, digits, ``_ . -``, starting with a letter or a
    digit), so every cfs volume can also be a Docker volume, and no name can smuggle a
    path separator, a NUL, or ``..`` into the paths built from it.
    """
    if not isinstance(name, str):
        raise InvalidName("volume name must be a string")
    if name == "":
        raise InvalidName("volume name is empty")
    if "\0" in name:
        raise InvalidName("volume name contains a NUL byte")
    if "/" in name:
        raise InvalidName(f"volume name {name!r} contains '/'")
    if name in (".", ".."):
        raise InvalidName(f"volume name {name!r} is reserved")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise InvalidName(f"volume name is longer than {NAME_MAX} bytes")
    if not _VOLUME_NAME.fullmatch(name):
        raise InvalidName(
            f"volume name {name!r} is not allowed: use letters, digits, '_', '.', '-', "
            "starting with a letter or digit")
    return name


def snapshot_name(volume: str, snapshot: str) -> str:
    """``volume@snapshot``, the catalog name of a snapshot; both parts are volume names,
    which cannot hold ``@``."""
    validate_volume_name(volume)
    validate_volume_name(snapshot)
    return f"{volume}@{snapshot}"


def is_snapshot_name(name: str) -> bool:
    """Whether a catalog name is a snapshot's (``volume@snapshot``)."""
    return "@" in name


def split_snapshot_name(name: str) -> tuple[str, str]:
    """(volume, snapshot) of ``volume@snapshot``; InvalidName if it is not one."""
    volume, at, snapshot = name.partition("@") if isinstance(name, str) else ("", "", "")
    if not at:
        raise InvalidName(f"{name!r} is not a snapshot name (VOLUME@SNAPSHOT)")
    snapshot_name(volume, snapshot)
    return volume, snapshot


def validate_catalog_name(name: str) -> str:
    """A name the catalog holds: a volume's, or a snapshot's ``volume@snapshot``."""
    if isinstance(name, str) and "@" in name:
        split_snapshot_name(name)
        return name
    return validate_volume_name(name)


def check_file_name(name: bytes) -> None:
    """File names inside a volume are at most 255 bytes (the kernel never sends '/' or NUL)."""
    if len(name) > NAME_MAX:
        raise NameTooLong(f"name is longer than {NAME_MAX} bytes")
