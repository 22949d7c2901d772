"""The API application factory (the generation routes arrive with the model)."""

from serve import create_app


def test_health_reports_ok_and_version():
    from covfefe import __version__

    client = create_app({"TESTING": True}).test_client()
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": __version__}


def test_errors_are_one_line_json():
    client = create_app({"TESTING": True}).test_client()
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.get_json()["error"].startswith("Not Found:")
    response = client.post("/api/health")
    assert response.status_code == 405
    assert "Method Not Allowed" in response.get_json()["error"]
