"""Real servers for the tests: each module starts one kind on free loopback ports in a temporary folder."""
