"""Which Sonar a command talks to, with which token: flags, environment, saved profiles, or
the embedded emulator.

Precedence, first found wins:

* token: ``--token`` / ``SONAR_TOKEN``, then the profile (``--profile`` / ``SONAR_PROFILE``,
  else the profile called ``default`` when one was saved);
* base URL: ``--base-url`` / ``SONAR_BASE_URL``, then ``--sandbox``, then the profile's, then
  Sonar's documented live URL.

Profiles live in ``profiles.json`` in the user's config directory (mode 0600, never in the
project). ``--emulate`` starts the emulator in-process on a free port; its world (customers,
messages, campaigns) is kept in ``emulator.sqlite`` in the user's data directory, so upsert,
then send, then get can be rehearsed across commands.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sonar_bulk.api.endpoints import (
    EMULATOR_PUBLISHABLE_KEY,
    EMULATOR_TOKEN,
    LIVE_BASE_URL,
    SANDBOX_BASE_URL,
    api_url,
    canonical_target,
    redact,
)
from sonar_bulk.errors import ConfigError, UsageError

APP = "sonar-bulk"
DEFAULT_PROFILE = "default"


def config_dir() -> Path:
    """Where profiles are kept (``$XDG_CONFIG_HOME/sonar-bulk`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def data_dir() -> Path:
    """Where the emulated world is kept (``$XDG_DATA_HOME/sonar-bulk`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def emulator_state_path() -> Path:
    return data_dir() / "emulator.sqlite"


def profiles_path() -> Path:
    return config_dir() / "profiles.json"


def load_profiles() -> dict[str, dict[str, str]]:
    path = profiles_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable profiles file ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a profiles file")
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}


def check_profile_name(name: str) -> str:
    """``name`` when it can name a profile; UsageError otherwise."""
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"--profile {name!r}: a name without spaces, please")
    return name


def save_profile(name: str, base_url: str, token: str) -> Path:
    """Save (or replace) profile ``name``; the file is created with mode 0600."""
    check_profile_name(name)
    profiles = load_profiles()
    profiles[name] = {"base_url": base_url, "token": token}
    path = profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(profiles, fh, indent=2)
    os.chmod(partial, 0o600)
    os.replace(partial, path)
    return path


@dataclass
class Connection:
    """Where calls go. ``target`` names it in journals (never the token)."""

    base_url: str
    #: Never in a repr (a notebook shows objects that hold a connection).
    token: str | None = field(repr=False)
    publishable_key: str | None = field(default=None, repr=False)
    emulated: bool = False
    profile: str | None = None
    #: URLs the base URL also answers (an emulator answering a URL copied from the docs).
    aliases: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return "emulator" if self.emulated else canonical_target(self.base_url)

    @property
    def label(self) -> str:
        """For people: the URL, and which profile or emulator."""
        if self.emulated:
            return "the emulator"
        profile = f" (profile {self.profile})" if self.profile else ""
        return f"{self.base_url}{profile}"


def _clean_secret(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if not all(32 < ord(c) < 127 for c in value):
        raise UsageError(
            f"the {what} has a line break, a control or a non-ASCII character; check "
            "SONAR_TOKEN / --token (the value is not shown)"
        )
    return value


def resolve(
    *,
    token: str | None,
    base_url: str | None,
    sandbox: bool = False,
    profile: str | None = None,
    publishable_key: str | None = None,
    need_token: bool = True,
) -> Connection:
    """The connection flags and environment ask for (see the module docstring)."""
    token = _clean_secret(token, "token")
    publishable_key = _clean_secret(publishable_key, "publishable key")
    profiles = load_profiles() if (profile or not token or not base_url) else {}
    chosen: dict[str, str] = {}
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none yet"
            raise ConfigError(
                f"no profile {profile!r} (saved: {known}); save one with "
                f"sonar-bulk connect --profile {profile}"
            )
        chosen = profiles[profile]
    elif not token and DEFAULT_PROFILE in profiles:
        chosen, profile = profiles[DEFAULT_PROFILE], DEFAULT_PROFILE
    url = base_url or (SANDBOX_BASE_URL if sandbox else chosen.get("base_url") or LIVE_BASE_URL)
    if base_url and sandbox:
        raise UsageError("--sandbox and --base-url name two APIs; pick one")
    try:
        api_url(url, "/")
    except ValueError as exc:
        raise ConfigError(redact(str(exc))) from None
    token = token or _clean_secret(chosen.get("token"), "token")
    if need_token and not token and not publishable_key:
        raise ConfigError(
            "no token: set SONAR_TOKEN (or pass --token), save one with sonar-bulk connect, "
            "or rehearse with --emulate"
        )
    return Connection(url, token, publishable_key, profile=profile if chosen else None)


@contextlib.contextmanager
def emulated(*, keep_world: bool = True, aliases: tuple[str, ...] = ()) -> Iterator[Connection]:
    """An emulator in-process on a free port; with ``keep_world`` its state lives in the user's
    data directory between commands (:func:`reset_emulated_world` forgets it)."""
    from sonar_bulk.emulator.app import EmulatorConfig
    from sonar_bulk.emulator.server import EmulatorServer

    state = None
    if keep_world:
        state = emulator_state_path()
        state.parent.mkdir(parents=True, exist_ok=True)
    with EmulatorServer(EmulatorConfig(state_file=str(state) if state else None)) as server:
        yield Connection(
            server.api_url,
            EMULATOR_TOKEN,
            EMULATOR_PUBLISHABLE_KEY,
            emulated=True,
            aliases=(LIVE_BASE_URL, SANDBOX_BASE_URL, *aliases),
        )


def reset_emulated_world() -> Path:
    """Forget the world ``--emulate`` keeps; its path."""
    path = emulator_state_path()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path
