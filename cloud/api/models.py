"""What the API takes and gives: FastAPI validates requests against these and writes the OpenAPI
description from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class DeviceSummary(BaseModel):
    id: str
    online: bool = Field(description="from the retained presence topic {id}/status")
    last_seen: float | None = Field(None, description="Unix time of the device's last message")
    since: float | None = Field(None, description="Unix time presence last changed")
    fw_version: str | None = Field(None, description="the CCM's firmware (Sys.GetInfo fw_version)")
    host_version: str | None = Field(None, description="the host MCU's firmware (Sys.GetInfo host.fw_version)")
    host_app: str | None = None
    info_at: float | None = Field(None, description="when Sys.GetInfo last answered")
    info_error: str | None = Field(None, description="why the last Sys.GetInfo failed")
    ota: dict | None = Field(None, description="the shadow's reported.ota {state, progress, message, version}")


class DeviceDetail(DeviceSummary):
    info: dict | None = Field(None, description="the last Sys.GetInfo answer")


class ShadowPatch(BaseModel):
    desired: dict[str, Any] | None = Field(description="merged into state.desired; a null value deletes its key")
    version: int | None = Field(None, description="only apply when the shadow is at this version (else 409)")


class ConfigPatch(BaseModel):
    config: dict[str, Any] = Field(description="merged into the device's config (its conf_acl applies)")
    save: bool = Field(True, description="persist it (Config.Save)")
    reboot: bool = Field(False, description="reboot after saving")


class RpcResult(BaseModel):
    result: Any = None


class OtaStart(BaseModel):
    bundle: str = Field(description="a stored bundle's name, as GET /api/bundles lists it")
    devices: list[str] = Field(min_length=1, description="device ids")
    via: Literal["shadow", "rpc"] = Field(
        "shadow", description="shadow: set desired.ota {url, version}; rpc: call OTA.Update {url}"
    )
