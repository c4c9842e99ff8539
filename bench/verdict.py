"""How every benchmark ends: the targets it missed, or what holds; the exit status says which."""

from __future__ import annotations


def verdict(failures: list[str], holds: str, missed: str = "FAIL") -> int:
    """Print the missed targets (exit status 1) or the sentence saying what holds (0)."""
    if failures:
        print(f"\n{missed}:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nOK: {holds}")
    return 0
