from tests.fixtures.k8s_tools import k8s_tools  # noqa: F401  (session fixture)
