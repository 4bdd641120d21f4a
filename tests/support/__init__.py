"""What tests of several services share: signed access tokens and a verifier that trusts them,
an owner principal, the field names of an INVALID_ARGUMENT's BadRequest, and a ServiceConfig
for servers whose database and Redis are never reached. Fakes of one service's ports stay in
that service's `tests/unit/<service>/support.py`."""
