"""Trust for the API: `pinterest.ca_file` adds to the system CAs; `ca_file_only` replaces them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import yaml

from stream.cli import main
from stream.errors import ConfigurationError
from stream.pinterest.client import api_ssl_context
from stream.settings import load_settings
from tests.network.helpers import ApiCA
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess

TEST_CA_NAME = "capi-stream test API CA"


def ca_names(context: ssl.SSLContext) -> set[str]:
    return {
        dict(entry[0] for entry in ca["subject"]).get("commonName", "")
        for ca in context.get_ca_certs()
    }


def test_ca_file_is_added_to_the_system_cas(api_ca: ApiCA) -> None:
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    context = api_ssl_context(api_ca.ca_file, ca_file_only=False)
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == system + 1 > 1
    assert TEST_CA_NAME in ca_names(context)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_ca_file_only_trusts_the_file_alone(api_ca: ApiCA) -> None:
    context = api_ssl_context(api_ca.ca_file, ca_file_only=True)
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == 1
    assert ca_names(context) == {TEST_CA_NAME}
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_no_ca_file_means_the_default_trust() -> None:
    assert api_ssl_context(None, ca_file_only=False) is True


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "garbage"])
def test_an_unloadable_ca_file_is_a_configuration_error(
    tmp_path: Path, content: str | None
) -> None:
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_text(content)
    with pytest.raises(ConfigurationError) as raised:
        api_ssl_context(ca_file, ca_file_only=False)
    assert raised.value.key == "pinterest.ca_file"
    assert str(ca_file) in str(raised.value)


def test_ca_file_only_needs_a_ca_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("pinterest: {ca_file_only: true}\n")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config, environ={})
    assert raised.value.key == "pinterest.ca_file_only"


@pytest.mark.parametrize(
    ("trust", "accepted"),
    [({}, False), ({"ca_file": "CA"}, True), ({"ca_file": "CA", "ca_file_only": True}, True)],
    ids=["system-cas-only", "additive-ca-file", "ca-file-only"],
)
def test_verify_over_https_trusts_the_sandbox_only_with_its_ca(
    https_sandbox: SandboxProcess,
    api_ca: ApiCA,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trust: dict[str, object],
    accepted: bool,
) -> None:
    pinterest = {
        "api_base_url": https_sandbox.url,
        "access_token": https_sandbox.token,
        "ad_account_id": DEFAULT_AD_ACCOUNT,
        **{k: str(api_ca.ca_file) if v == "CA" else v for k, v in trust.items()},
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"pinterest": pinterest}))
    code = main(["verify", "--only", "pinterest", "--config", str(config)])
    out = capsys.readouterr().out
    if accepted:
        assert code == 0, out
        assert "HTTP 200" in out
    else:
        assert code == 1
        assert "no answer after" in out
        assert https_sandbox.stats()["requests"]["total"] == 0
