"""Creating an App Service plan and a web app on it from the group page, in a real Chromium: the plan and
the app are what the CLI then shows (the app on that plan, kind linux from the plan), bad input is a
message with no write, and a Reader pressing Create sees ARM's AuthorizationFailed with nothing made.
Screenshots go to reports/portal/."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import RunningPlatform, cli_json
from tests.portal.people import SHOTS, person, sign_in


def test_a_plan_and_an_app_on_it_made_on_the_group_page(platform: RunningPlatform, chromium: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    rg, plan, app = f"mk-rg-{tag}", f"mk-plan-{tag}", f"mk-app-{tag}"
    group = cli_json(platform.home, "group", "create", "-n", rg, "-l", "westus")
    contributor = person(platform, "Cato Creator", "Contributor", group["id"])
    reader = person(platform, "Rory Reader", "Reader", group["id"])
    SHOTS.mkdir(parents=True, exist_ok=True)

    context, page = sign_in(chromium, platform, contributor)
    page.get_by_role("link", name=rg).click()
    page.get_by_label("Plan name").fill(plan)
    page.get_by_label("Pricing tier").select_option("B1")
    page.get_by_label("Operating system").select_option("linux")
    page.get_by_role("button", name="Create plan").click()
    assert page.get_by_role("heading", name=f"Resource group {rg}").is_visible()
    made_plan = cli_json(platform.home, "appservice", "plan", "show", "-g", rg, "-n", plan)
    assert made_plan["sku"]["name"] == "B1" and made_plan["reserved"] is True
    assert [p["name"] for p in cli_json(platform.home, "appservice", "plan", "list", "-g", rg)] == [plan]

    page.get_by_label("Name", exact=True).fill("-not a name-")
    page.get_by_role("button", name="Create app").click()
    assert "2 to 60 letters" in page.get_by_role("alert").inner_text()
    assert cli_json(platform.home, "webapp", "list", "-g", rg) == []
    page.get_by_label("Name", exact=True).fill(app)
    page.get_by_label("App Service plan").select_option(plan)
    page.get_by_role("button", name="Create app").click()
    assert page.get_by_role("heading", name=f"Identity of {app}").is_visible()
    site = cli_json(platform.home, "webapp", "show", "-g", rg, "-n", app)
    assert site["serverFarmId"].lower().endswith(f"/serverfarms/{plan}".lower()) and site["kind"].startswith("app")
    page.goto(f"{platform.authority}/portal/resourcegroups/{rg}")
    assert page.get_by_role("link", name=f"Identity of {app}").is_visible()
    page.screenshot(path=str(SHOTS / "create-app-on-plan.png"), full_page=True)
    context.close()

    context, page = sign_in(chromium, platform, reader)
    page.goto(f"{platform.authority}/portal/resourcegroups/{rg}")
    page.get_by_label("Name", exact=True).fill(f"{app}-2")
    page.get_by_role("button", name="Create app").click()
    assert "AuthorizationFailed" in page.get_by_role("alert").inner_text()
    assert [w["name"] for w in cli_json(platform.home, "webapp", "list", "-g", rg)] == [app]
    page.screenshot(path=str(SHOTS / "create-app-reader-refused.png"), full_page=True)
    context.close()
