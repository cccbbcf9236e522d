"""The template language on its own: expressions, every function, parameters, copy loops, order, errors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from lanyard.arm.template import DeploymentScope, TemplateError, outputs, plan, render
from lanyard.arm.template.engine import Evaluator, shown_parameters
from lanyard.arm.template.expressions import parse

SUB = "00000000-0000-0000-0000-00000000000a"
GROUP_ID = f"/subscriptions/{SUB}/resourceGroups/rg1"
SCOPE = DeploymentScope(SUB, "Lanyard", "tenant-1", GROUP_ID, "rg1", "westus", {"env": "t"}, "dep1")


class FakeResources:
    def __init__(self, known: dict[str, dict[str, Any]]) -> None:
        self.known = {k.lower(): v for k, v in known.items()}
        self.asked: list[tuple[str, str | None, bool]] = []

    def reference(self, resource_id: str, api_version: str | None, full: bool) -> Any:
        self.asked.append((resource_id, api_version, full))
        found = self.known.get(resource_id.lower())
        if found is None:
            raise TemplateError(f"The Resource '{resource_id}' was not found.")
        return found if full else found["properties"]


def ev(params: dict[str, Any] | None = None, variables: dict[str, Any] | None = None, **kw: Any) -> Evaluator:
    return Evaluator({"variables": variables or {}}, SCOPE, dict(params or {}), **kw)


def run(expr: str, **kw: Any) -> Any:
    return ev(**kw).value(expr, "test")


def template(resources: list[Any], **extra: Any) -> dict[str, Any]:
    return {"$schema": "x", "contentVersion": "1.0.0.0", "resources": resources, **extra}


def site(name: str = "app", **extra: Any) -> dict[str, Any]:
    return {"type": "Microsoft.Web/sites", "apiVersion": "2022-03-01", "name": name, **extra}


# -- expressions ------------------------------------------------------------------------------


def test_literals_escapes_and_plain_strings() -> None:
    assert run("['it''s']") == "it's"
    assert run("[[not an expression]") == "[not an expression]"
    assert run("plain") == "plain"
    assert run("[ concat( 'a' , 'b' ) ]") == "ab"
    assert run("[length('')]") == 0
    assert run("[-3]") == -3


def test_property_and_index_access_is_case_insensitive() -> None:
    e = ev(params={"obj": {"Identity": {"principalId": "p-1"}, "list": [10, 20]}})
    assert e.value("[parameters('obj').identity.PRINCIPALID]", "t") == "p-1"
    assert e.value("[parameters('obj')['list'][1]]", "t") == 20
    with pytest.raises(TemplateError, match="doesn't exist"):
        e.value("[parameters('obj').missing]", "t")
    with pytest.raises(TemplateError, match="out of bounds"):
        e.value("[parameters('obj').list[5]]", "t")


@pytest.mark.parametrize("bad", ["concat('a'", "concat('a' 'b')", "'unterminated", "concat(,)", "a.b", "1 2", "#"])
def test_malformed_expressions_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError, match="is not valid"):
        parse(bad)


def test_unknown_function_names_the_path() -> None:
    with pytest.raises(TemplateError) as info:
        ev().value({"a": ["[nosuch(1)]"]}, "properties.template.resources[0].properties")
    assert "nosuch" in info.value.message and "https://aka.ms/arm-functions" in info.value.message
    assert info.value.path == "properties.template.resources[0].properties.a[0]"


# -- functions --------------------------------------------------------------------------------


def test_string_functions() -> None:
    assert run("[concat('a', 1, true())]") == "a1True"
    assert run("[concat(parameters('a'), parameters('b'))]", params={"a": [1], "b": [2, 3]}) == [1, 2, 3]
    assert run("[format('{0}-{1}-{0} {{x}}', 'a', 2)]") == "a-2-a {x}"
    assert run("[toLower('MiXeD')]") == "mixed" and run("[toUpper('MiXeD')]") == "MIXED"
    with pytest.raises(TemplateError, match="expects its parameter to be a string"):
        run("[toLower(1)]")
    with pytest.raises(TemplateError, match="no argument 2"):
        run("[format('{2}', 'a')]")


def test_unique_string_and_guid_are_deterministic() -> None:
    one = run("[uniqueString('a', 'b')]")
    assert len(one) == 13 and one == one.lower() and one == run("[uniqueString('a', 'b')]")
    assert one != run("[uniqueString('a', 'c')]")
    g = run("[guid('x', 'y')]")
    assert uuid.UUID(g).version == 5 and g == run("[guid('x', 'y')]") and g != run("[guid('y', 'x')]")


def test_logic_functions() -> None:
    assert run("[equals(1, 1)]") is True and run("[equals('a', 'A')]") is False
    assert run("[equals(true(), 1)]") is False
    assert run("[and(true(), true(), false())]") is False and run("[or(false(), true())]") is True
    assert run("[not(equals(1, 2))]") is True
    assert run("[if(equals(1, 1), 'yes', 'no')]") == "yes"
    # Only the branch taken is evaluated.
    assert run("[if(false(), nosuch(), 'safe')]") == "safe"
    with pytest.raises(TemplateError, match="boolean"):
        run("[and(1, true())]")
    with pytest.raises(TemplateError, match="expects 3"):
        run("[if(true(), 1)]")


def test_collection_functions() -> None:
    p = {"o": {"a": 1, "n": {"x": 1}}, "o2": {"b": 2, "n": {"y": 2}}, "l": [1, 2], "l2": [2, 3]}
    assert run("[empty('')]") and run("[empty(parameters('l'))]", params={"l": []})
    assert not run("[empty(parameters('o'))]", params=p)
    assert run("[length(parameters('l'))]", params=p) == 2 and run("[length('abc')]") == 3
    assert run("[union(parameters('o'), parameters('o2'))]", params=p) == {"a": 1, "b": 2, "n": {"x": 1, "y": 2}}
    assert run("[union(parameters('l'), parameters('l2'))]", params=p) == [1, 2, 3]
    assert run("[contains('hello', 'ell')]") and not run("[contains('hello', 'x')]")
    assert run("[contains(parameters('o'), 'A')]", params=p)
    assert run("[contains(parameters('l'), 2)]", params=p) and not run("[contains(parameters('l'), '2')]", params=p)
    with pytest.raises(TemplateError, match="length"):
        run("[length(1)]")
    with pytest.raises(TemplateError, match="all objects or all arrays"):
        run("[union(parameters('o'), parameters('l'))]", params=p)


def test_scope_functions() -> None:
    assert run("[resourceGroup().name]") == "rg1" and run("[resourceGroup().location]") == "westus"
    assert run("[resourceGroup().id]") == GROUP_ID
    assert run("[subscription().subscriptionId]") == SUB and run("[subscription().tenantId]") == "tenant-1"
    assert run("[deployment().name]") == "dep1"
    assert run("[resourceId('Microsoft.Web/sites', 'app')]") == f"{GROUP_ID}/providers/Microsoft.Web/sites/app"
    assert run("[resourceId('Microsoft.Web/sites/slots', 'app', 'stage')]") == (
        f"{GROUP_ID}/providers/Microsoft.Web/sites/app/slots/stage"
    )
    assert run("[resourceId('other', 'Microsoft.Web/sites', 'app')]") == (
        f"/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.Web/sites/app"
    )
    assert run("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'r1')]") == (
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/r1"
    )
    with pytest.raises(TemplateError, match="requires 2 resource name"):
        run("[resourceId('Microsoft.Web/sites/slots', 'app')]")


def test_parameters_variables_and_copy_index() -> None:
    e = ev(
        params={"Name": "n"}, variables={"full": "[concat(parameters('name'), '-x')]", "self": "[variables('self')]"}
    )
    assert e.value("[variables('FULL')]", "t") == "n-x"
    with pytest.raises(TemplateError, match="refers to itself"):
        e.value("[variables('self')]", "t")
    with pytest.raises(TemplateError, match="parameter 'nope' is not found"):
        e.value("[parameters('nope')]", "t")
    with pytest.raises(TemplateError, match="variable 'nope' is not found"):
        e.value("[variables('nope')]", "t")
    assert ev(copy={"loop": 2}).value("[copyIndex(1)]", "t") == 3
    assert ev(copy={"loop": 2}).value("[copyIndex('loop')]", "t") == 2
    with pytest.raises(TemplateError, match="not expected at this location"):
        run("[copyIndex()]")


def test_reference_full_and_properties() -> None:
    app_id = f"{GROUP_ID}/providers/Microsoft.Web/sites/app"
    fake = FakeResources({app_id: {"identity": {"principalId": "p-9"}, "properties": {"state": "Running"}}})
    e = ev(resolver=fake, names={"app": app_id})
    assert (
        e.value("[reference(resourceId('Microsoft.Web/sites', 'app'), '2018-02-01', 'Full').identity.principalId]", "t")
        == "p-9"
    )
    assert e.value("[reference('app').state]", "t") == "Running"
    assert fake.asked == [(app_id, "2018-02-01", True), (app_id, None, False)]
    with pytest.raises(TemplateError, match="not expected at this location"):
        run("[reference('app')]")


# -- templates --------------------------------------------------------------------------------


def test_parameters_types_defaults_allowed_values_and_secure() -> None:
    t = template(
        [],
        parameters={
            "name": {"type": "string", "defaultValue": "[concat('app-', resourceGroup().name)]"},
            "count": {"type": "int"},
            "sku": {"type": "string", "allowedValues": ["B1", "S1"], "defaultValue": "B1"},
            "pw": {"type": "securestring"},
        },
    )
    p = plan(t, {"count": {"value": 2}, "pw": {"value": "hunter2"}}, SCOPE)
    assert p.parameters == {"name": "app-rg1", "count": 2, "sku": "B1", "pw": "hunter2"}
    shown = shown_parameters(p)
    assert shown["pw"] == {"type": "SecureString"} and "hunter2" not in str(shown)
    with pytest.raises(TemplateError, match="parameter 'count' is not provided") as info:
        plan(t, {"pw": {"value": "x"}}, SCOPE)
    assert info.value.path == "properties.template.parameters.count"
    with pytest.raises(
        TemplateError, match="Expected a value of type 'Integer', but received a value of type 'String'"
    ):
        plan(t, {"count": {"value": "2"}, "pw": {"value": "x"}}, SCOPE)
    with pytest.raises(TemplateError, match="must be one of: B1, S1"):
        plan(t, {"count": {"value": 1}, "pw": {"value": "x"}, "sku": {"value": "P9"}}, SCOPE)
    with pytest.raises(TemplateError, match="not present in the original template"):
        plan(t, {"count": {"value": 1}, "pw": {"value": "x"}, "extra": {"value": 1}}, SCOPE)
    with pytest.raises(TemplateError, match="invalid type"):
        plan(template([], parameters={"x": {"type": "float"}}), {}, SCOPE)


def test_secure_parameter_value_stays_out_of_allowed_values_error() -> None:
    t = template([], parameters={"pw": {"type": "securestring", "allowedValues": ["a"]}})
    with pytest.raises(TemplateError) as info:
        plan(t, {"pw": {"value": "s3cret-value"}}, SCOPE)
    assert "s3cret-value" not in info.value.message


def test_malformed_templates() -> None:
    for bad, where in [
        ({"resources": "no"}, "properties.template.resources"),
        ({}, "properties.template.resources"),
        (template([site(name="a/b")]), "properties.template.resources[0].name"),
        (template([{"type": "Microsoft.Web/sites", "name": "a"}]), "properties.template.resources[0].apiversion"),
        (template([site(), site()]), "properties.template.resources[1]"),
        (template([site(resources=[site("c")])]), "properties.template.resources[0].resources"),
    ]:
        with pytest.raises(TemplateError) as info:
            plan(bad, {}, SCOPE)
        assert info.value.path == where, (bad, info.value.path)
    with pytest.raises(TemplateError, match="JSON object"):
        plan(["not", "an", "object"], {}, SCOPE)


def test_copy_condition_and_dependency_order() -> None:
    t = template(
        [
            site(
                "[concat('app', copyIndex(1))]",
                copy={"name": "apps", "count": "[parameters('n')]"},
                dependsOn=["plan"],
                properties={"index": "[copyIndex()]"},
            ),
            {"type": "Microsoft.Web/serverfarms", "apiVersion": "2022-03-01", "name": "plan"},
            site("skipped", condition="[equals(parameters('n'), 99)]"),
            site("last", dependsOn=["apps", "skipped", "[resourceId('Microsoft.Web/serverfarms', 'plan')]"]),
        ],
        parameters={"n": {"type": "int", "defaultValue": 2}},
    )
    p = plan(t, {}, SCOPE)
    assert [r.name for r in p.resources] == ["plan", "app1", "app2", "last"]
    last = p.resources[-1]
    assert {d.rsplit("/", 1)[-1] for d in last.depends_on} == {"app1", "app2", "plan"}
    assert render(p, p.resources[2], FakeResources({})) == {"properties": {"index": 1}}


def test_dependency_errors() -> None:
    cycle = template([site("a", dependsOn=["b"]), site("b", dependsOn=["a"])])
    with pytest.raises(TemplateError, match="Circular dependency detected on resource") as info:
        plan(cycle, {}, SCOPE)
    assert info.value.path.endswith(".dependsOn")
    with pytest.raises(TemplateError, match="'ghost' is not defined in the template"):
        plan(template([site("a", dependsOn=["ghost"])]), {}, SCOPE)
    with pytest.raises(TemplateError, match="copy count"):
        plan(template([site("a", copy={"name": "l", "count": -1})]), {}, SCOPE)
    with pytest.raises(TemplateError, match="'reference' is not expected"):
        plan(template([site("[reference('x').name]")]), {}, SCOPE)


def test_outputs_evaluate_references_and_hide_secure_values() -> None:
    app_id = f"{GROUP_ID}/providers/Microsoft.Web/sites/app"
    t = template(
        [site()],
        variables={"appName": "app"},
        outputs={
            "principal": {
                "type": "string",
                "value": "[reference(resourceId('Microsoft.Web/sites', variables('appName')), '2018-02-01', "
                "'Full').identity.principalId]",
            },
            "count": {"type": "int", "value": "[length(variables('appName'))]"},
            "hidden": {"type": "securestring", "value": "x"},
            "off": {"type": "string", "value": "y", "condition": "[false()]"},
        },
    )
    p = plan(t, {}, SCOPE)
    got = outputs(p, FakeResources({app_id: {"identity": {"principalId": "p-1"}, "properties": {}}}))
    assert got == {"principal": {"type": "String", "value": "p-1"}, "count": {"type": "Integer", "value": 3}}
    with pytest.raises(TemplateError, match="was not found"):
        outputs(p, FakeResources({}))


def test_every_expression_is_checked_before_anything_deploys() -> None:
    bad_output = template([], outputs={"x": {"type": "string", "value": "[concat(nosuch('a'))]"}})
    with pytest.raises(TemplateError, match="'nosuch' is not valid") as info:
        plan(bad_output, {}, SCOPE)
    assert info.value.path == "properties.template.outputs.x.value"
    with pytest.raises(TemplateError, match="is not valid") as info:
        plan(template([site(properties={"a": "[concat('x']"})]), {}, SCOPE)
    assert info.value.path == "properties.template.resources[0].properties.a"


def test_property_names_may_be_expressions() -> None:
    uai = "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'id1')]"
    t = template([site(identity={"type": "UserAssigned", "userAssignedIdentities": {uai: {}, "[[lit]": 1}})])
    p = plan(t, {}, SCOPE)
    body = render(p, p.resources[0], FakeResources({}))
    key = f"{GROUP_ID}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
    assert body["identity"]["userAssignedIdentities"] == {key: {}, "[lit]": 1}


def test_extension_resources_take_their_scope() -> None:
    site_id = f"{GROUP_ID}/providers/Microsoft.Web/sites/app"
    ra = {
        "type": "Microsoft.Authorization/roleAssignments",
        "apiVersion": "2022-04-01",
        "name": "[guid('a')]",
        "scope": "[resourceId('Microsoft.Web/sites', 'app')]",
        "dependsOn": ["app"],
        "properties": {"principalId": "p"},
    }
    p = plan(template([ra, site()]), {}, SCOPE)
    assert [r.type for r in p.resources] == ["Microsoft.Web/sites", "Microsoft.Authorization/roleAssignments"]
    assignment = p.resources[1]
    assert assignment.id.startswith(f"{site_id}/providers/Microsoft.Authorization/roleAssignments/")
    assert "scope" not in render(p, assignment, FakeResources({}))
    with pytest.raises(TemplateError, match="resource group") as info:
        plan(template([{**ra, "scope": "/subscriptions/other/resourceGroups/x"}]), {}, SCOPE)
    assert info.value.path.endswith(".scope")


SUB_SCOPE = DeploymentScope(SUB, "Lanyard", "tenant-1", None, None, None, {}, "subdep", location="westus")


def test_nested_deployments_are_placed_and_matched_across_scopes() -> None:
    nested = {
        "type": "Microsoft.Resources/deployments",
        "apiVersion": "2022-09-01",
        "name": "inner",
        "resourceGroup": "rg2",
        "properties": {
            "expressionEvaluationOptions": {"scope": "inner"},
            "parameters": {"p": {"value": "[deployment().name]"}},
            "template": {"resources": [], "outputs": {"x": {"type": "string", "value": "[parameters('p')]"}}},
        },
    }
    after = {
        "type": "Microsoft.Resources/resourceGroups",
        "apiVersion": "2022-09-01",
        "name": "late",
        "location": "westus",
        # A subscription-level id for a deployment that lives in rg2: matched by type and name, as ARM does.
        "dependsOn": ["[resourceId('Microsoft.Resources/deployments', 'inner')]"],
    }
    planned = plan(template([after, nested]), {}, SUB_SCOPE)
    assert [r.name for r in planned.resources] == ["inner", "late"]
    assert (
        planned.resources[0].id
        == f"/subscriptions/{SUB}/resourceGroups/rg2/providers/Microsoft.Resources/deployments/inner"
    )
    assert planned.resources[1].id == f"/subscriptions/{SUB}/resourceGroups/late"
    body = render(planned, planned.resources[0], FakeResources({}))
    # Inner scope: the parameters are ours, the template is left for the nested deployment.
    assert body["properties"]["parameters"] == {"p": {"value": "subdep"}}
    assert body["properties"]["template"]["outputs"]["x"]["value"] == "[parameters('p')]"
    assert "resourceGroup" not in body
    with pytest.raises(TemplateError, match="subscription"):
        plan(template([{**nested, "subscriptionId": str(uuid.uuid4())}]), {}, SUB_SCOPE)
    with pytest.raises(TemplateError, match="resourceGroup"):
        Evaluator({}, SUB_SCOPE, {}).value("[resourceGroup().name]", "x")
