import tunnel_core


def test_all_lists_exactly_the_public_names_sorted():
    public = {name for name in vars(tunnel_core) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(tunnel_core, name)).__name__ == "module"}
    assert sorted(tunnel_core.__all__) == tunnel_core.__all__
    assert set(tunnel_core.__all__) == public - modules
