"""The provider seam of the control plane (arm/hooks.py): a resource type's hooks are called on the one
write/read/delete path, and a type without hooks gets the generic behaviour. Runs on SQLite with the
control plane itself; the directory is the recording principal service below."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lanyard.arm import providers
from lanyard.arm.hooks import ProviderHooks, Reply, SubRequest, WriteRequest
from lanyard.arm.providers import ResourceType
from lanyard.arm.service import Caller, ControlPlane
from lanyard.core.clock import FrozenClock
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import parse_path
from lanyard.storage import arm_repo
from lanyard.storage import directory_repo as dirrepo
from lanyard.storage.db import Store, make_engine, migrate

TENANT, SUB = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
OWNER = Caller("33333333-3333-3333-3333-333333333333", "owner-app", TENANT)
GROUP = f"/subscriptions/{SUB}/resourceGroups/rg"
WIDGET = f"{GROUP}/providers/Lanyard.Test/widgets/w1"
PLAIN = f"{GROUP}/providers/Lanyard.Test/plains/p1"
API = {"api-version": "2024-01-01"}


class Principals:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.deleted: list[str] = []

    def create_managed_identity(
        self, s: Any, tenant_id: str, display_name: str, resource_id: str
    ) -> dirrepo.PrincipalRecord:
        self.created.append(display_name)
        return dirrepo.PrincipalRecord(
            str(uuid.uuid4()), str(uuid.uuid4()), tenant_id, display_name, "ManagedIdentity", resource_id, 0.0
        )

    def delete_managed_identity(self, s: Any, object_id: str) -> None:
        self.deleted.append(object_id)

    def revoke_identity_credentials(self, s: Any, object_id: str) -> None:
        pass


class Recorder:
    """Hooks that note each call, so a test can see which ran and with what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def prepare(self, stored: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        self.calls.append(("prepare", previous))
        return {**stored, "prepared": True}

    def validate(self, stored: dict[str, Any], write: WriteRequest) -> dict[str, Any]:
        self.calls.append(("validate", write.ref.name))
        if stored.get("color") == "invalid":
            raise ArmError("Widgets cannot be invalid.", code="InvalidWidget", status=400)
        return stored

    def on_write(self, record: arm_repo.ResourceRecord, write: WriteRequest) -> arm_repo.ResourceRecord:
        self.calls.append(("on_write", record.properties.get("prepared")))
        return replace(record, properties={**record.properties, "serial": 7})

    def on_delete(self, host: Any, s: Any, record: arm_repo.ResourceRecord) -> None:
        self.calls.append(("on_delete", record.id))

    def read_context(self, host: Any, s: Any, record: arm_repo.ResourceRecord) -> dict[str, Any]:
        return {"greeting": f"hello {record.name}"}

    def shape(self, props: dict[str, Any], ctx: dict[str, Any]) -> None:
        props["greeting"] = ctx["greeting"]

    def gears(self, request: SubRequest) -> Reply | None:
        if request.ref.is_collection:
            return None  # not served here: the generic path answers
        self.calls.append(("route", (request.owner_type, request.ref.name)))
        return Reply(200, {"gear": request.ref.name, "of": request.owner.name})


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    hooks = ProviderHooks(
        prepare=rec.prepare,
        validate=rec.validate,
        on_write=rec.on_write,
        on_delete=rec.on_delete,
        read_context=rec.read_context,
        shape=rec.shape,
        principal_name=lambda ref: f"widget {ref.name}",
        routes=(("gears", rec.gears),),
    )
    name = re.compile(r"^[a-z0-9]{1,10}$")
    widgets = ResourceType("Lanyard.Test/widgets", name, "1-10.", supports_identity=True, hooks=hooks)
    plains = ResourceType("Lanyard.Test/plains", name, "1-10.", supports_identity=True)
    monkeypatch.setitem(providers.TYPES, "lanyard.test/widgets", widgets)
    monkeypatch.setitem(providers.TYPES, "lanyard.test/plains", plains)
    return rec


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, Principals]]:
    store = Store(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    migrate(store.engine)
    clock = FrozenClock()
    with store.session() as s:
        dirrepo.add_tenant(s, TENANT, "t", clock.now())
        dirrepo.add_subscription(s, SUB, TENANT, "s", clock.now())
    principals = Principals()
    control = ControlPlane(store, principals, clock, tenant_id=TENANT, zone="test.internal", base_url="https://arm")
    control.ensure_owner(OWNER.object_id, SUB)
    control.handle("PUT", parse_path(GROUP), {"location": "westus"}, API, OWNER)
    try:
        yield control, principals
    finally:
        store.close()


def put(control: ControlPlane, resource_id: str, body: dict[str, Any]) -> Reply:
    return control.handle("PUT", parse_path(resource_id), body, API, OWNER)


def test_a_provider_with_hooks_has_them_called_on_write_read_route_and_delete(
    plane: tuple[ControlPlane, Principals], recorder: Recorder
) -> None:
    control, principals = plane
    made = put(control, WIDGET, {"properties": {"color": "red"}, "identity": {"type": "SystemAssigned"}})
    assert made.status == 201
    assert made.body["properties"] == {
        "color": "red",
        "prepared": True,
        "serial": 7,
        "provisioningState": "Succeeded",
        "greeting": "hello w1",
    }
    assert recorder.calls == [("prepare", None), ("validate", "w1"), ("on_write", True)]
    assert principals.created == ["widget w1"]  # the provider names its system-assigned principal

    recorder.calls.clear()
    put(control, WIDGET, {"properties": {"color": "blue"}, "identity": {"type": "SystemAssigned"}})
    assert recorder.calls[0][0] == "prepare" and recorder.calls[0][1]["color"] == "red"

    gear = control.handle("GET", parse_path(f"{WIDGET}/gears/g1"), None, API, OWNER)
    assert (gear.status, gear.body) == (200, {"gear": "g1", "of": "w1"})
    assert recorder.calls[-1] == ("route", ("Lanyard.Test/widgets", "g1"))

    recorder.calls.clear()
    assert control.handle("DELETE", parse_path(WIDGET), None, API, OWNER).status == 200
    assert recorder.calls == [("on_delete", WIDGET)]
    assert len(principals.deleted) == 1


def test_a_validate_hook_refusing_leaves_nothing_written(
    plane: tuple[ControlPlane, Principals], recorder: Recorder
) -> None:
    control, principals = plane
    with pytest.raises(ArmError) as refused:
        put(control, WIDGET, {"properties": {"color": "invalid"}, "identity": {"type": "SystemAssigned"}})
    assert refused.value.code_value == "InvalidWidget"
    assert ("on_write", True) not in recorder.calls and principals.created == []
    with pytest.raises(ArmError) as missing:
        control.handle("GET", parse_path(WIDGET), None, API, OWNER)
    assert missing.value.status_value == 404


def test_a_provider_without_hooks_keeps_the_generic_behaviour(
    plane: tuple[ControlPlane, Principals], recorder: Recorder
) -> None:
    control, principals = plane
    made = put(control, PLAIN, {"properties": {"color": "red"}, "identity": {"type": "SystemAssigned"}})
    assert made.status == 201
    assert made.body["properties"] == {"color": "red", "provisioningState": "Succeeded"}
    assert principals.created == ["p1"]  # named after the resource
    # ARM's replace semantics: a PUT without an identity block removes the identity.
    again = put(control, PLAIN, {"properties": {}})
    assert again.body["identity"] == {"type": "None"} and len(principals.deleted) == 1
    # No routes: a child path is not a provider resource.
    with pytest.raises(ArmError) as unknown:
        control.handle("GET", parse_path(f"{PLAIN}/gears/g1"), None, API, OWNER)
    assert unknown.value.code_value == "NoRegisteredProviderFound"
    assert control.handle("DELETE", parse_path(PLAIN), None, API, OWNER).status == 200
    assert recorder.calls == []


def test_the_insights_provider_makes_its_keys_once_and_checks_the_application_type(
    plane: tuple[ControlPlane, Principals],
) -> None:
    control, _ = plane
    component = f"{GROUP}/providers/Microsoft.Insights/components/app-ai"
    made = put(control, component, {"kind": "web", "properties": {"Application_Type": "web"}})
    assert made.status == 200 and made.body["kind"] == "web"
    props = made.body["properties"]
    assert props["ConnectionString"].startswith(f"InstrumentationKey={props['InstrumentationKey']};")
    again = put(control, component, {"kind": "web", "properties": {"Application_Type": "other"}})
    assert again.body["properties"]["InstrumentationKey"] == props["InstrumentationKey"]
    assert again.body["properties"]["AppId"] == props["AppId"]
    for bad in ({"Application_Type": "desktop"}, {"RetentionInDays": 7}):
        with pytest.raises(ArmError) as refused:
            put(control, component, {"kind": "web", "properties": bad})
        assert refused.value.code_value == "InvalidRequestPropertyValue"
    with pytest.raises(ArmError) as named:
        put(control, f"{GROUP}/providers/Microsoft.Insights/components/ends-with-dot.", {"properties": {}})
    assert named.value.code_value == "InvalidResourceName"
