"""Weekly team report: who worked on what, where the churn is, who owns which folder, how
often we ship. Run: ``caelum bi report bi/weekly_team.py --since 90d --out reports/weekly``."""

TITLE = "Weekly team report"
SINCE = "90d"
SOURCES = ["git"]
TABLES = ["repositories", "activity", "authors", "churn", "ownership", "deployments", "delivery"]


def tables(data, built):
    """Derived table: this report's busiest weeks (commits summed over authors and repos)."""
    activity = built["activity"]
    if not len(activity):
        return {"busiest_weeks": activity.reindex(columns=["week", "commits", "authors"])}
    weeks = activity.groupby("week", as_index=False).agg(commits=("commits", "sum"),
                                                         authors=("author", "nunique"))
    return {"busiest_weeks": weeks.sort_values(["commits", "week"], ascending=[False, True]).head(10)}
