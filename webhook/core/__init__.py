"""The pure conversion core: functions on dicts and frozen dataclasses, no I/O."""
