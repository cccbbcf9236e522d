"""Microsoft.Insights/components (Application Insights) as a control-plane resource only: the keys and
connection string `az functionapp create` puts into a new app's settings. Lanyard ingests no telemetry;
the connection string names where the ingestion endpoint would be, under the platform's zone."""

from __future__ import annotations

import uuid
from typing import Any

from lanyard.arm.hooks import Host, ProviderHooks
from lanyard.protocol.arm import bad_request
from lanyard.storage import arm_repo as repo

COMPONENT_TYPE = "Microsoft.Insights/components"
APPLICATION_TYPES = ("web", "other")
_KEY = "__instrumentationkey"
_APP_ID = "__appid"


def prepare_component(stored: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(stored)
    application_type = out.get("Application_Type", "web")
    if not isinstance(application_type, str) or application_type.lower() not in APPLICATION_TYPES:
        raise bad_request(f"Application_Type must be one of {list(APPLICATION_TYPES)}.", "InvalidRequestPropertyValue")
    out["Application_Type"] = application_type.lower()
    retention = out.get("RetentionInDays", 90)
    if isinstance(retention, bool) or not isinstance(retention, int) or not 30 <= retention <= 730:
        raise bad_request("RetentionInDays must be an integer from 30 to 730.", "InvalidRequestPropertyValue")
    out["RetentionInDays"] = retention
    # The keys are the component's identity: made once, kept by every later PUT.
    before = previous or {}
    out[_KEY] = before.get(_KEY) or str(uuid.uuid4())
    out[_APP_ID] = before.get(_APP_ID) or str(uuid.uuid4())
    return out


def shape_component(props: dict[str, Any], ctx: dict[str, Any]) -> None:
    stored = ctx["stored"]
    key, location, zone = stored[_KEY], str(ctx["location"]), ctx["zone"]
    props.update(
        {
            "ApplicationId": ctx["name"],
            "AppId": stored[_APP_ID],
            "Name": ctx["name"],
            "InstrumentationKey": key,
            "ConnectionString": f"InstrumentationKey={key};IngestionEndpoint=https://{location}.in.{zone}/;"
            f"LiveEndpoint=https://{location}.livediagnostics.{zone}/;ApplicationId={stored[_APP_ID]}",
            "TenantId": ctx["subscription"],
            "CreationDate": ctx["created"],
            "Flow_Type": props.get("Flow_Type", "Bluefield"),
            "Request_Source": props.get("Request_Source", "rest"),
            "IngestionMode": props.get("IngestionMode", "ApplicationInsights"),
            "publicNetworkAccessForIngestion": props.get("publicNetworkAccessForIngestion", "Enabled"),
            "publicNetworkAccessForQuery": props.get("publicNetworkAccessForQuery", "Enabled"),
            "Ver": "v2",
        }
    )


def read_component(host: Host, s: Any, record: repo.ResourceRecord) -> dict[str, Any]:
    from lanyard.arm.service import iso  # the control plane's timestamp format

    return {"stored": record.properties, "subscription": record.subscription_id, "created": iso(record.created_at)}


COMPONENT_HOOKS = ProviderHooks(prepare=prepare_component, read_context=read_component, shape=shape_component)
