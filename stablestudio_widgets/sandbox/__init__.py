"""A local StableStudio-compatible server that really verifies x402 payments and sign-ins.

For teaching, demos and tests: Base Sepolia terms (``eip155:84532``), a throwaway merchant, real
EIP-3009 signature recovery, single-use nonces, SIWX-authenticated jobs owned by their payer,
locally synthesised media, job durations spread around each route's typical time (seeded) and
fault injection. Binds 127.0.0.1 only.

    from stablestudio_widgets.sandbox import Sandbox, Faults
    with Sandbox(time_scale=0.01, faults=Faults(fail_rate=0.2, seed=1)) as sb:
        print(sb.url, sb.merchant)
"""

from .faults import Faults
from .jobs import Timing
from .runner import Sandbox

__all__ = ["Faults", "Sandbox", "Timing"]
