"""The HTTP edge of the control plane: writes become commands published to `dbaas.commands`
(answered 202 with the operation to follow), reads come from the projections' query router.

A package of its own because it joins two sides that must not know each other: `commands`
(publishing) and `projections` (queries). May import both, plus `schemas` and `runtime`;
never `processors`.
"""
