"""LocalBackend without processes: how many replicas it keeps for each version, across reloads."""

from __future__ import annotations

import pytest

from router_image.backends.local import LocalBackend, LocalReplica
from router_image.config import AutoscaleConfig, RouteConfig, RouterConfig, ScorerLaunch, VersionConfig

pytestmark = pytest.mark.anyio


class Process:
    """A scorer process that runs until terminated."""

    pid = 0
    returncode = None

    def poll(self) -> None:
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def kill(self) -> None:
        pass


def backend() -> LocalBackend:
    b = LocalBackend()

    def spawn(v) -> LocalReplica:
        v.next_index += 1
        return LocalReplica(v.next_index, 1000 + v.next_index, Process())  # type: ignore[arg-type]

    b._spawn = spawn  # type: ignore[method-assign]
    return b


def as_read(autoscale_enabled: bool, v: VersionConfig) -> VersionConfig:
    """The version as the router's config gives it to the backend."""
    config = RouterConfig(autoscale_enabled=autoscale_enabled,
                          routes=[RouteConfig(kind="service", name="s", versions=[v])])
    return config.routes[0].versions[0]


@pytest.mark.parametrize("autoscale_enabled, autoscale", [(False, AutoscaleConfig()),
                                                          (True, AutoscaleConfig(enabled=False))])
async def test_a_reload_sizes_a_fixed_version_to_its_new_num_replicas(autoscale_enabled, autoscale) -> None:
    """Off for the router (a dev_test cluster) or for the version: num_replicas is the count, on
    every reload, not only the first."""
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", num_replicas=1, scorer=ScorerLaunch(), autoscale=autoscale)
    await b.apply([as_read(autoscale_enabled, v)])
    assert b.replicas("iris") == 1
    await b.apply([as_read(autoscale_enabled, v.model_copy(update={"num_replicas": 3}))])
    assert b.replicas("iris") == 3 and len(b._versions["iris"].replicas) == 3
    await b.apply([as_read(autoscale_enabled, v.model_copy(update={"num_replicas": 2}))])
    assert b.replicas("iris") == 2 and len(b._versions["iris"].replicas) == 2


async def test_a_reload_that_turns_the_routers_autoscaling_off_fixes_the_count() -> None:
    """A stack moved to dev_test: the versions its autoscaler sized go back to num_replicas."""
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", num_replicas=2, scorer=ScorerLaunch())
    await b.apply([as_read(True, v)])
    await b.scale("iris", 5)
    assert b.replicas("iris") == 5
    await b.apply([as_read(False, v)])
    assert b.replicas("iris") == 2 and len(b._versions["iris"].replicas) == 2


async def test_an_autoscaled_version_keeps_the_count_its_autoscaler_set() -> None:
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", num_replicas=1, scorer=ScorerLaunch(),
                      autoscale=AutoscaleConfig(min_replicas=1))
    await b.apply([v])
    await b.scale("iris", 4)
    await b.apply([v.model_copy(update={"num_replicas": 2})])
    assert b.replicas("iris") == 4


async def test_a_version_it_cannot_start_changes_nothing() -> None:
    b = backend()
    v = VersionConfig(name="v1", deployment="iris", scorer=ScorerLaunch())
    await b.apply([v])
    with pytest.raises(ValueError, match="no scorer launch settings"):
        await b.apply([VersionConfig(name="v2", deployment="other")])  # iris removed, other unstartable
    assert b.replicas("iris") == 1  # still running
