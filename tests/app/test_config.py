from pathlib import Path

import pytest

from app import create_app
from app.config import ConfigError, Settings
from app.security import new_encryption_key
from sandbox.hubspot import app_env as hubspot_env

REAL_SECRET = "Vq3k9ZpL0wX7mB2nR8tY5cH1jF6dG4sA"


def production(**extra):
    return {
        "APP_ENV": "production",
        "DATABASE_URL": "sqlite:///:memory:",
        "PUBLIC_URL": "https://pql.example.com",
        **extra,
    }


def test_production_refuses_to_start_without_secret_key():
    env = production(TOKEN_ENCRYPTION_KEYS=new_encryption_key())
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        create_app(env)


def test_production_refuses_a_short_or_development_secret_key():
    with pytest.raises(ConfigError, match="at least 32"):
        Settings.from_env(
            production(SECRET_KEY="short", TOKEN_ENCRYPTION_KEYS=new_encryption_key())
        )
    with pytest.raises(ConfigError, match="at least 32"):
        Settings.from_env(
            production(
                SECRET_KEY="dev-only-insecure-secret-key",
                TOKEN_ENCRYPTION_KEYS=new_encryption_key(),
            )
        )


def test_production_refuses_to_start_without_token_encryption_key():
    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_KEYS must be set"):
        create_app(production(SECRET_KEY=REAL_SECRET))


def test_invalid_encryption_key_is_named_by_position():
    env = production(
        SECRET_KEY=REAL_SECRET, TOKEN_ENCRYPTION_KEYS=f"{new_encryption_key()},not-a-key"
    )
    with pytest.raises(ConfigError, match="entry 2 is not a valid Fernet key"):
        Settings.from_env(env)


def test_production_starts_with_real_secrets():
    app = create_app(
        production(
            SECRET_KEY=REAL_SECRET,
            TOKEN_ENCRYPTION_KEYS=new_encryption_key(),
            HUBSPOT_CLIENT_ID="a-client",
            HUBSPOT_CLIENT_SECRET="a-secret",
        )
    )
    settings = app.extensions["pql"].settings
    assert settings.is_production
    assert settings.hubspot_base_url == "https://api.hubapi.com"


def test_production_refuses_to_start_without_a_crm_app():
    with pytest.raises(ConfigError, match="HUBSPOT_CLIENT_ID"):
        create_app(production(SECRET_KEY=REAL_SECRET, TOKEN_ENCRYPTION_KEYS=new_encryption_key()))


def test_a_crm_without_its_app_credentials_is_off_and_points_at_the_real_platform(tmp_path):
    settings = Settings.from_env({}, tmp_path)
    assert not settings.hubspot_enabled and not settings.salesforce_enabled
    assert settings.hubspot_base_url == "https://api.hubapi.com"
    assert settings.salesforce_login_url == "https://login.salesforce.com"


def test_a_stand_in_is_configured_like_any_crm_app(tmp_path):
    settings = Settings.from_env(hubspot_env("http://127.0.0.1:9"), tmp_path)
    assert settings.hubspot_enabled
    assert settings.hubspot_base_url == "http://127.0.0.1:9"
    assert settings.hubspot_authorize_url == "http://127.0.0.1:9/oauth/authorize"


@pytest.mark.parametrize("prefix", ["", "Pql_", "pql-", "9pql", "a" * 21, "pql__"])
def test_a_property_prefix_a_crm_would_refuse_is_a_config_error(tmp_path, prefix):
    with pytest.raises(ConfigError, match="PROPERTY_PREFIX"):
        Settings.from_env({"PROPERTY_PREFIX": prefix}, tmp_path)


def test_development_has_safe_defaults_and_a_sqlite_file_in_the_instance_folder(tmp_path):
    settings = Settings.from_env({}, instance_path=tmp_path)
    assert settings.env == "development"
    assert settings.database_url == f"sqlite:///{tmp_path / 'pql.sqlite3'}"
    assert len(settings.token_encryption_keys) == 1


def test_unknown_environment_is_rejected():
    with pytest.raises(ConfigError, match="APP_ENV must be one of"):
        Settings.from_env({"APP_ENV": "staging"}, instance_path=Path("."))


@pytest.mark.parametrize(
    "given",
    ["postgres://u:p@h:5432/d", "postgresql://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"],
)
def test_postgres_urls_use_the_psycopg_driver(given):
    settings = Settings.from_env({"DATABASE_URL": given})
    assert settings.database_url == "postgresql+psycopg://u:p@h:5432/d"


def test_non_numeric_limit_is_a_config_error():
    with pytest.raises(ConfigError, match="MAX_BATCH_BYTES must be a whole number"):
        Settings.from_env({"DATABASE_URL": "sqlite://", "MAX_BATCH_BYTES": "lots"})


def test_salesforce_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET"):
        Settings.from_env({"SALESFORCE_CLIENT_ID": "abc"}, tmp_path)
    with pytest.raises(ConfigError, match="SALESFORCE_API_RESERVE_PERCENT"):
        Settings.from_env({"SALESFORCE_API_RESERVE_PERCENT": "95"}, tmp_path)
    with pytest.raises(ConfigError, match="SALESFORCE_API_VERSION"):
        Settings.from_env({"SALESFORCE_API_VERSION": "v62"}, tmp_path)
    real = Settings.from_env(
        {
            "SALESFORCE_CLIENT_ID": "id",
            "SALESFORCE_CLIENT_SECRET": "secret",
            "SECRET_KEY": REAL_SECRET,
            "TOKEN_ENCRYPTION_KEYS": new_encryption_key(),
        },
        tmp_path,
    )
    assert real.salesforce_login_url == "https://login.salesforce.com"
    assert real.salesforce_sandbox_login_url == "https://test.salesforce.com"
    assert real.salesforce_enabled


def real_hubspot(**extra):
    return {"HUBSPOT_CLIENT_ID": "a-client", "HUBSPOT_CLIENT_SECRET": "a-secret", **extra}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"SECRET_KEY": "ab" * 24}, "SECRET_KEY is not random"),
        ({"SECRET_KEY": "s" * 48}, "SECRET_KEY is not random"),
        ({"PUBLIC_URL": "http://pql.example.com"}, "PUBLIC_URL must be an https"),
    ],
)
def test_production_refuses_weak_values(extra, problem):
    env = production(
        **real_hubspot(SECRET_KEY=REAL_SECRET, TOKEN_ENCRYPTION_KEYS=new_encryption_key())
    )
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env({**env, **extra})


def test_production_refuses_the_token_key_derived_from_the_secret_key():
    from app.config import _dev_encryption_key

    env = production(
        **real_hubspot(
            SECRET_KEY=REAL_SECRET,
            TOKEN_ENCRYPTION_KEYS=f"{new_encryption_key()},{_dev_encryption_key(REAL_SECRET)}",
        )
    )
    with pytest.raises(ConfigError, match="development key derived"):
        Settings.from_env(env)


def test_development_refuses_the_development_secrets_beside_real_crm_credentials(tmp_path):
    with pytest.raises(ConfigError, match="public development value"):
        Settings.from_env(real_hubspot(), instance_path=tmp_path)
    with pytest.raises(ConfigError, match="public development value"):
        Settings.from_env(
            {"SALESFORCE_CLIENT_ID": "c", "SALESFORCE_CLIENT_SECRET": "s"}, instance_path=tmp_path
        )
    with pytest.raises(ConfigError, match="public development value"):
        Settings.from_env(
            real_hubspot(SECRET_KEY=REAL_SECRET), instance_path=tmp_path
        )  # the token key is then derived from SECRET_KEY
    safe = Settings.from_env(
        real_hubspot(SECRET_KEY=REAL_SECRET, TOKEN_ENCRYPTION_KEYS=new_encryption_key()),
        instance_path=tmp_path,
    )
    assert not safe.development_secrets
    # A local stand-in for the CRM with the development secrets is the demo: allowed.
    demo = Settings.from_env(
        real_hubspot(HUBSPOT_BASE_URL="http://127.0.0.1:8025"), instance_path=tmp_path
    )
    assert demo.development_secrets
