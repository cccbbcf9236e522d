"""Microsoft.Web's own rules: a site's plan-derived properties (sku, serverFarmId, reserved), its web
config (`sites/{name}/config/web`, kept with the site), the namespace-wide name check az runs before
`webapp create`, and the function app stacks `functionapp create` reads."""

from __future__ import annotations

import copy
from typing import Any

from lanyard.arm.hooks import APPSETTINGS_KEY, SKU_KEY, Host, ProviderHooks, WriteRequest
from lanyard.core.errors import ArmError
from lanyard.protocol.arm import ResourceRef, bad_request, resource_key
from lanyard.storage import arm_repo as repo

SITE_CONFIG_KEY = "__siteconfig"
FARM_TYPE = "Microsoft.Web/serverfarms"
SITE_TYPE = "Microsoft.Web/sites"
SLOT_TYPE = "Microsoft.Web/sites/slots"
# What a site's web config says before anyone set it (the fields az reads and prints).
DEFAULT_SITE_CONFIG: dict[str, Any] = {
    "numberOfWorkers": 1,
    "netFrameworkVersion": "v4.0",
    "phpVersion": "",
    "pythonVersion": "",
    "nodeVersion": "",
    "linuxFxVersion": "",
    "windowsFxVersion": None,
    "requestTracingEnabled": False,
    "remoteDebuggingEnabled": False,
    "httpLoggingEnabled": False,
    "detailedErrorLoggingEnabled": False,
    "use32BitWorkerProcess": True,
    "webSocketsEnabled": False,
    "alwaysOn": False,
    "http20Enabled": False,
    "minTlsVersion": "1.2",
    "scmMinTlsVersion": "1.2",
    "ftpsState": "FtpsOnly",
    "managedPipelineMode": "Integrated",
    "loadBalancing": "LeastRequests",
    "localMySqlEnabled": False,
    "scmType": "None",
    "appCommandLine": "",
    "defaultDocuments": [],
    "ipSecurityRestrictions": [],
    "scmIpSecurityRestrictions": [],
    "cors": None,
    "healthCheckPath": None,
    "vnetRouteAllEnabled": False,
    "functionAppScaleLimit": 0,
    "minimumElasticInstanceCount": 0,
}
MAX_SETTINGS = 1024


def _settings_from_pairs(pairs: object) -> dict[str, str]:
    """siteConfig.appSettings is a list of {name, value}; the config/appsettings resource is a map."""
    if not isinstance(pairs, list) or len(pairs) > MAX_SETTINGS:
        raise bad_request("siteConfig.appSettings must be an array of {name, value}.", "InvalidRequestContent")
    out: dict[str, str] = {}
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("name"), str):
            raise bad_request("Each siteConfig.appSettings entry needs a string name.", "InvalidRequestContent")
        value = pair.get("value")
        out[pair["name"]] = "" if value is None else str(value)
    return out


def site_config_update(current: dict[str, Any], update: object) -> dict[str, Any]:
    """The stored web config after `update` (a siteConfig object) is applied; unknown fields are kept
    as given, as Microsoft.Web echoes them."""
    if update is None:
        return current
    if not isinstance(update, dict):
        raise bad_request("siteConfig must be a JSON object.", "InvalidRequestContent")
    merged = {**current}
    for key, value in update.items():
        if key in ("appSettings", "connectionStrings", "metadata") or value is None:
            continue  # separate resources (config/appsettings, ...); null means "leave as is"
        merged[key] = copy.deepcopy(value)
    return merged


def prepare_site(stored: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(stored)
    site_config = out.pop("siteConfig", None)
    config = dict((previous or {}).get(SITE_CONFIG_KEY) or out.get(SITE_CONFIG_KEY) or {})
    out[SITE_CONFIG_KEY] = site_config_update(config, site_config)
    if isinstance(site_config, dict) and site_config.get("appSettings") is not None:
        out[APPSETTINGS_KEY] = _settings_from_pairs(site_config["appSettings"])
    return out


def validate_site(stored: dict[str, Any], write: WriteRequest) -> dict[str, Any]:
    """A site's serverFarmId names an existing plan; stored as the plan's id."""
    if not stored.get("serverFarmId"):
        return stored
    farm_ref = str(stored["serverFarmId"])
    if "/" not in farm_ref:
        # Microsoft.Web takes a plan's bare name for one in the site's group (az functionapp create sends it).
        farm_ref = f"{write.group_id}/providers/{FARM_TYPE}/{farm_ref}"
    farm = repo.get_resource(write.session, resource_key(farm_ref))
    if farm is None or farm.type != FARM_TYPE:
        raise bad_request(f"The server farm '{str(stored['serverFarmId'])[:200]}' was not found.", "ServerFarmNotFound")
    return {**stored, "serverFarmId": farm.id}


def site_read_context(host: Host, s: Any, record: repo.ResourceRecord) -> dict[str, Any]:
    farm_id = record.properties.get("serverFarmId")
    return {
        "farm": repo.get_resource(s, resource_key(str(farm_id))) if farm_id else None,
        "site_config": dict(record.properties.get(SITE_CONFIG_KEY) or {}),
    }


def farm_read_context(host: Host, s: Any, record: repo.ResourceRecord) -> dict[str, Any]:
    sites = repo.list_resources(s, sub=record.subscription_id, type_=SITE_TYPE)
    return {"number_of_sites": sum(1 for r in sites if str(r.properties.get("serverFarmId", "")).lower() == record.key)}


def slot_principal_name(ref: ResourceRef) -> str:
    """Azure names a slot's system-assigned principal `<app>/slots/<slot>`."""
    return f"{ref.names[0]}/slots/{ref.names[1]}"


def shape_site(props: dict[str, Any], ctx: dict[str, Any]) -> None:
    """What Microsoft.Web derives from the site's plan; az reads `sku` and `serverFarmId` unguarded."""
    hostname = f"{ctx['names'][0]}{'-' + ctx['names'][1] if len(ctx['names']) > 1 else ''}.{ctx['zone']}"
    props.setdefault("state", "Running")
    props.setdefault("enabled", True)
    props["hostNames"] = [hostname]
    props["enabledHostNames"] = [hostname]
    props["defaultHostName"] = hostname
    props.setdefault("httpsOnly", False)
    props.setdefault("reserved", False)
    farm = ctx.get("farm")
    farm_sku = dict(farm.properties.get(SKU_KEY) or {}) if farm is not None else {}
    # Azure's casing ("Basic"), whatever casing the plan's request used for the tier.
    props["sku"] = _tier(str(farm_sku.get("name") or "F1"))
    props["serverFarmId"] = farm.id if farm is not None else props.get("serverFarmId")
    if farm is not None:
        props["reserved"] = bool(farm.properties.get("reserved", False))
    props["resourceGroup"] = ctx.get("resource_group")
    props["siteConfig"] = {**DEFAULT_SITE_CONFIG, **ctx.get("site_config", {}), "appSettings": None}


def shape_farm(props: dict[str, Any], ctx: dict[str, Any]) -> None:
    props.setdefault("status", "Ready")
    props["numberOfSites"] = ctx.get("number_of_sites", 0)
    props.setdefault("reserved", False)


def prepare_farm(stored: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(stored)
    if "reserved" in out and not isinstance(out["reserved"], bool):
        raise bad_request("reserved must be a boolean.", "InvalidRequestContent")
    return out


def farm_kind(kind: str | None, props: dict[str, Any]) -> str | None:
    """A Linux plan (reserved) is kind `linux` in Azure, whatever the request said."""
    if props.get("reserved") is True and (kind is None or kind.lower() == "app"):
        return "linux"
    return kind


_TIERS = {"F": "Free", "D": "Shared", "B": "Basic", "S": "Standard", "P": "Premium", "I": "Isolated", "Y": "Dynamic"}


def _tier(sku_name: str) -> str:
    name = sku_name.upper()
    if name.startswith("EP"):
        return "ElasticPremium"
    if name.startswith("P") and name.endswith(("V2", "V3", "MV3")):
        return "PremiumV" + name[-1] if not name.endswith("MV3") else "PremiumMV3"
    return _TIERS.get(name[:1], "Standard")


# The config documents a site keeps with it: config name -> (stored key, defaults, casing in ids).
SLOT_NAMES_KEY = "__slotconfignames"
CONFIG_DOCUMENTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "web": (SITE_CONFIG_KEY, DEFAULT_SITE_CONFIG, "web"),
    "slotconfignames": (
        SLOT_NAMES_KEY,
        {"connectionStringNames": None, "appSettingNames": None, "azureStorageConfigNames": None},
        "slotConfigNames",
    ),
}


def site_config_json(
    site_id: str, name: str, location: str, config: dict[str, Any], which: str = "web"
) -> dict[str, Any]:
    _, defaults, casing = CONFIG_DOCUMENTS[which]
    return {
        "id": f"{site_id}/config/{casing}",
        "name": name,
        "type": "Microsoft.Web/sites/config",
        "location": location,
        "properties": {**defaults, **config},
    }


def check_name_availability(body: object, taken: set[str]) -> dict[str, Any]:
    """POST …/providers/Microsoft.Web/checknameavailability: site names are host names, unique across the
    platform."""
    from lanyard.arm.providers import TYPES

    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise bad_request("The request needs a 'name' (string).", "InvalidRequestContent")
    name = body["name"]
    site = TYPES[SITE_TYPE.lower()]
    if not site.name_pattern.match(name):
        return {"nameAvailable": False, "reason": "Invalid", "message": f"The name '{name[:100]}' is invalid."}
    if name.lower() in taken:
        return {
            "nameAvailable": False,
            "reason": "AlreadyExists",
            "message": f"Hostname '{name}' already exists. Please select a different name.",
        }
    return {"nameAvailable": True, "reason": None, "message": None}


def publishing_profiles(site: dict[str, Any], stored: dict[str, Any]) -> tuple[int, str, bytes]:
    """POST sites/{name}/publishxml: az webapp create/show read it for an FTP URL. Lanyard has no publishing
    endpoint (the agent runs what the operator starts), so the document holds no FTP profile and no
    credentials: only the Web Deploy profile naming the site, which az reads past."""
    from xml.sax.saxutils import quoteattr

    name = str(site["name"])
    host = str(site["properties"]["defaultHostName"])
    profile = (
        f'<publishProfile profileName={quoteattr(name + " - Web Deploy")} publishMethod="MSDeploy" '
        f"publishUrl={quoteattr(host + ':443')} msdeploySite={quoteattr(name)} destinationAppUrl="
        f'{quoteattr("https://" + host)} webSystem="WebSites"></publishProfile>'
    )
    return 200, "application/xml", f"<publishData>{profile}</publishData>".encode()


def _site_hooks(**overrides: Any) -> ProviderHooks:
    from lanyard.arm import web_config  # it builds on this module's config documents

    return ProviderHooks(
        prepare=prepare_site,
        read_context=site_read_context,
        shape=shape_site,
        keeps_identity_on_put=True,
        actions=(("publishxml", publishing_profiles),),
        routes=(("config", web_config.config),),
        **overrides,
    )


SITE_HOOKS = _site_hooks(validate=validate_site)
# A slot runs on its app's plan: its own body names none to check.
SLOT_HOOKS = _site_hooks(principal_name=slot_principal_name)
FARM_HOOKS = ProviderHooks(prepare=prepare_farm, read_context=farm_read_context, shape=shape_farm, kind=farm_kind)


# -- runtime stacks (GET /providers/Microsoft.Web/webAppStacks | functionAppStacks) --------------
# The runtimes Lanyard's hosts offer: Python and Node.js, as the commands run them (`webapp run` starts
# whatever the workload is; the stack only names it). (language, display, [(minor, display, EOL)]).
_STACKS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("python", "Python", (("3.12", "2028-10-31T00:00:00Z"), ("3.11", "2027-10-31T00:00:00Z"))),
    ("node", "Node", (("22", "2027-04-30T00:00:00Z"), ("20", "2026-04-30T00:00:00Z"))),
)


def _web_minor(language: str, display: str, version: str, eol: str) -> dict[str, Any]:
    linux = {
        "runtimeVersion": f"{language.upper()}|{version}{'-lts' if language == 'node' else ''}",
        "remoteDebuggingSupported": False,
        "appInsightsSettings": {"isSupported": True},
        "gitHubActionSettings": {"isSupported": True, "supportedVersion": version},
        "endOfLifeDate": eol,
    }
    settings: dict[str, Any] = {"linuxRuntimeSettings": linux}
    if language == "node":
        settings["windowsRuntimeSettings"] = {**linux, "runtimeVersion": f"~{version}"}
    return {"displayText": f"{display} {version}", "value": version, "stackSettings": settings}


def _function_minor(language: str, display: str, version: str, eol: str) -> dict[str, Any]:
    fx = f"{display}|{version}"
    linux = {
        "runtimeVersion": fx,
        "isPreview": False,
        "isDeprecated": False,
        "isHidden": False,
        "isDefault": version == "3.11" or version == "20",
        "remoteDebuggingSupported": False,
        "appInsightsSettings": {"isSupported": True},
        "gitHubActionSettings": {"isSupported": True, "supportedVersion": version},
        "appSettingsDictionary": {"FUNCTIONS_WORKER_RUNTIME": language},
        "siteConfigPropertiesDictionary": {"use32BitWorkerProcess": False, "linuxFxVersion": fx},
        "supportedFunctionsExtensionVersions": ["~4"],
        "endOfLifeDate": eol,
    }
    settings: dict[str, Any] = {"linuxRuntimeSettings": linux}
    if language == "node":
        settings["windowsRuntimeSettings"] = {
            **linux,
            "runtimeVersion": f"~{version}",
            "siteConfigPropertiesDictionary": {"use32BitWorkerProcess": True},
            "appSettingsDictionary": {
                "FUNCTIONS_WORKER_RUNTIME": language,
                "WEBSITE_NODE_DEFAULT_VERSION": f"~{version}",
            },
        }
    return {"displayText": f"{display} {version}", "value": version, "stackSettings": settings}


def stacks_json(kind: str) -> dict[str, Any]:
    """`kind` is webAppStacks or functionAppStacks (any case); anything else is not a stacks path."""
    function = kind.lower() == "functionappstacks"
    if not function and kind.lower() != "webappstacks":
        raise ArmError(f"The resource type '{kind[:60]}' was not found.", code="NotFound", status=404)
    minor = _function_minor if function else _web_minor
    type_name = "functionAppStacks" if function else "webAppStacks"
    value = []
    for language, display, versions in _STACKS:
        majors: dict[str, list[dict[str, Any]]] = {}
        for version, eol in versions:
            majors.setdefault(version.split(".")[0], []).append(minor(language, display, version, eol))
        value.append(
            {
                "id": None,
                "name": language,
                "type": f"Microsoft.Web/{type_name}",
                "properties": {
                    "displayText": display,
                    "value": language,
                    "preferredOs": "linux",
                    "majorVersions": [
                        {"displayText": f"{display} {major}", "value": major, "minorVersions": minors}
                        for major, minors in majors.items()
                    ],
                },
            }
        )
    return {"value": value, "nextLink": None}
