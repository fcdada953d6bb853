from tests.api.conftest import client, make_client  # noqa: F401 - the same app fixtures as the API tests
