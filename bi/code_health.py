"""Code-health report: hotspots (change frequency × complexity), change coupling, bus factor,
test health and the weekly code-health trend. Uses ``caelum analyze`` / ``caelum test``
results on each machine when they exist. Run: ``caelum bi report bi/code_health.py --out reports/health``."""

TITLE = "Code health"
SINCE = "180d"
SOURCES = ["git", "tests", "metrics", "workflows", "resources"]
TABLES = ["repositories", "hotspots", "coupling", "ownership", "code_health", "test_runs", "test_health",
          "workflow_runs"]


def tables(data, built):
    """Derived table: directories whose bus factor is 1 (one person wrote most of it)."""
    owners = built["ownership"]
    return {"bus_factor_risks": owners[owners["bus_factor"] <= 1].reset_index(drop=True)}
