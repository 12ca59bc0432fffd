"""The leaderboard: submission bundles, their validation, the service and its client.

Public API (heavy imports stay inside the functions):
- ``leaderboard.submit.build_bundle(run, subset, scale, track, name, ...) -> bytes``
- ``leaderboard.submit.upload(data, url, token, retries=5) -> dict``
- ``leaderboard.bundle.read_bundle(data) -> Bundle``
- ``leaderboard.validate.validate_bundle(bundle, pool=None) -> Checked``
- ``leaderboard.validate.suite_tasks(suite) -> Suite``; ``compute_aggregates(suite, results)``
- ``leaderboard.app.create_app(db, max_upload_bytes=..., max_uid_bytes=...) -> FastAPI``
"""
