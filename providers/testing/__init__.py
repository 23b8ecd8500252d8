"""The provider test kit: what every provider, ours or a third party's, must pass.

* :mod:`providers.testing.conformance`: ``ProviderConformance``, the pytest suite
  (lifecycle, ownership, and the fault matrix: every step of ``create`` × lost
  answer, dropped connection, Ctrl-C, SIGTERM, kill -9 of the CLI), each case ending
  in a check at the fake's API that nothing is left.
* :mod:`providers.testing.faults`: the faults, a plan that arms them per step, and a
  proxy that applies them in front of an emulator that cannot be changed.
* :mod:`providers.testing.jsonapi`: the base of a stateful fake of a JSON API.

It needs pytest (``pip install inletsctl[test]``); nothing else imports it.
"""
