"""Reads pipetrail through python-gitlab, unchanged, as a GitLab user would read GitLab's
audit events. Prints what it got as JSON for the Rust test to check.

usage: read_audit_events.py URL TOKEN PROJECT_ID GROUP_PATH
"""
import json
import sys

import gitlab

url, token, project_id, group_path = sys.argv[1:5]
gl = gitlab.Gitlab(url, private_token=token)


def summary(events):
    return [
        {
            "id": e.id,
            "author_id": e.author_id,
            "entity_id": e.entity_id,
            "entity_type": e.entity_type,
            "event_type": getattr(e, "event_type", None),
            "author_name": e.details.get("author_name"),
            "target_id": e.details.get("target_id"),
            "created_at": e.created_at,
        }
        for e in events
    ]


out = {
    "instance": summary(gl.audit_events.list(get_all=True, per_page=7)),
    "instance_first_page": summary(gl.audit_events.list(per_page=5, page=1)),
    "project": summary(gl.projects.get(int(project_id), lazy=True).audit_events.list(iterator=True)),
    "group": summary(gl.groups.get(group_path, lazy=True).audit_events.list(get_all=True)),
}
first = out["instance"][0]["id"]
one = gl.audit_events.get(first)
out["single"] = {"id": one.id, "event_type": getattr(one, "event_type", None)}
keyset = gl.audit_events.list(iterator=True, pagination="keyset", order_by="id", sort="desc", per_page=3)
out["keyset"] = [e.id for e in keyset]
try:
    gitlab.Gitlab(url, private_token="wrong").audit_events.list(get_all=True)
    out["wrong_token"] = "accepted"
except gitlab.exceptions.GitlabAuthenticationError as e:
    out["wrong_token"] = e.response_code
print(json.dumps(out))
