from consumer.quarantine.privacy import KEY_VARIABLE, address_ref, hash_key


def test_the_reference_hides_the_address_and_depends_on_the_key() -> None:
    ref = address_ref("Jane.Doe@Example.com", b"k1")
    assert "jane" not in ref.lower() and len(ref) == 16
    assert ref == address_ref(" jane.doe@example.com", b"k1")  # one address, one reference
    assert ref != address_ref("jane.doe@example.com", b"k2")
    assert ref != address_ref("john.doe@example.com", b"k1")


def test_the_key_comes_from_the_environment_or_is_random_per_process() -> None:
    assert hash_key({KEY_VARIABLE: "secret"}) == b"secret"
    assert hash_key({}) == hash_key({}) and len(hash_key({})) == 32
