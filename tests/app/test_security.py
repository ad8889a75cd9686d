import pytest

from app.security import TokenCipher, TokenDecryptionError, generate_write_key, new_encryption_key


def test_token_round_trips_and_is_not_plaintext():
    cipher = TokenCipher([new_encryption_key()])
    encrypted = cipher.encrypt("secret-refresh-token")
    assert "secret-refresh-token" not in encrypted
    assert cipher.decrypt(encrypted) == "secret-refresh-token"


def test_old_key_still_decrypts_after_a_new_primary_key_is_added():
    old, new = new_encryption_key(), new_encryption_key()
    encrypted_with_old = TokenCipher([old]).encrypt("tok")
    assert TokenCipher([new, old]).decrypt(encrypted_with_old) == "tok"


def test_token_encrypted_with_an_unknown_key_raises_a_clear_error():
    encrypted = TokenCipher([new_encryption_key()]).encrypt("tok")
    with pytest.raises(TokenDecryptionError, match="TOKEN_ENCRYPTION_KEYS"):
        TokenCipher([new_encryption_key()]).decrypt(encrypted)


def test_write_keys_are_unique_and_carry_no_basic_auth_separator():
    keys = {generate_write_key().secret for _ in range(200)}
    assert len(keys) == 200
    assert all(":" not in k and k.startswith("wk_") for k in keys)
