"""The API paths of the kinds the product writes."""

from __future__ import annotations

import pytest

from webhook.kube.resources import resource_for


def test_paths_follow_the_manifest_version() -> None:
    assert (
        resource_for("VirtualService", "networking.istio.io/v1beta1").object_path("shop", "web")
        == "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices/web"
    )
    assert (
        resource_for("Service").object_path("shop", "web") == "/api/v1/namespaces/shop/services/web"
    )
    with pytest.raises(ValueError, match="not one the product writes"):
        resource_for("Pod")
