import pytest

from provisioner.client import api_path


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (("vhosts", "/"), "/api/vhosts/%2F"),
        (("permissions", "/plant-a", "dev1"), "/api/permissions/%2Fplant-a/dev1"),
        (("users", "a/b@c:d#e%f"), "/api/users/a%2Fb%40c%3Ad%23e%25f"),
        (("users", "ñandú"), "/api/users/%C3%B1and%C3%BA"),
        (("users", "a b?c"), "/api/users/a%20b%3Fc"),
        (("users", "%2F"), "/api/users/%252F"),
    ],
)
def test_segments_encoded_once(segments, expected):
    assert api_path(*segments) == expected
