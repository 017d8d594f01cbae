"""Config helpers: typed parsing of the `file.py:arg` suffix of ml_collections config files.

Every `configs/*.py` has `get_config(arg=None)`. The launch scripts load it with
`config_flags.DEFINE_config_file('config', lock_config=True)`, so
`--config=configs/dsfd_original.py:smoke,steps=20` calls `get_config('smoke,steps=20')`.
`parse_arg` turns that string into a typed `ConfigDict` against declared defaults (the
big_vision convention): a bare name sets a boolean to True, `key=value` converts `value` to the
type of the default, and an unknown key or a malformed value is an error that names it.
Overrides of individual fields go through the usual flags: `--config.train.steps=100`.
"""

from __future__ import annotations

import ml_collections

_TRUE = ('true', '1', 'yes')
_FALSE = ('false', '0', 'no')


def _convert(key: str, value: str, default):
    if isinstance(default, bool):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f'config arg {key}={value!r}: expected a boolean (true/false)')
    if default is None or isinstance(default, str):
        return value
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f'config arg {key}={value!r}: expected {type(default).__name__}') from None


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses `'smoke,steps=20'` into a ConfigDict typed by `defaults`.

    Args:
      arg: the part after `:` in `--config=file.py:arg`, or None.
      **defaults: the accepted keys with their default values (their types are the types the
        values are converted to; a None default takes the value as a string).

    Returns:
      A ConfigDict with every key of `defaults`.

    Raises:
      ValueError: an unknown key, a bare name that is not a boolean, or a value that does not
        convert.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in (arg or '').split(','):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition('=')
        key = key.strip()
        if key not in defaults:
            raise ValueError(f'unknown config arg {key!r}; known: {", ".join(sorted(defaults))}')
        if not sep:
            if not isinstance(defaults[key], bool):
                raise ValueError(f'config arg {key!r} needs a value ({key}=...)')
            out[key] = True
        else:
            out[key] = _convert(key, value.strip(), defaults[key])
    return out
