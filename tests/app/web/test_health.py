from app import create_app
from tests.helpers.apps import config_for


def test_healthz_answers_while_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_on_a_migrated_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_readyz_is_not_ready_before_migrations(db_factory):
    app = create_app(config_for(db_factory.new_url()))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready"
    assert body["checks"]["migrations"].startswith("behind")
    app.extensions["pql"].db.dispose()


def test_readyz_reports_an_unreachable_database():
    app = create_app(config_for("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"].startswith("unreachable")


def test_unknown_path_gets_a_json_error_with_code_and_message(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"
    assert response.get_json()["message"]


def test_wrong_method_gets_405_with_allow_header(client):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
