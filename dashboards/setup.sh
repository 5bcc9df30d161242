#!/bin/sh
# One-shot setup of the Elasticsearch/Kibana stack for Vmi (the `setup` service in docker-compose.yml;
# also runnable by hand against any cluster with the same variables). Idempotent: safe to run again.
#   1. sets the kibana_system password, so Kibana can connect;
#   2. creates the vmi_writer role and user that Vmi's exporter writes with;
#   3. loads the index template (dashboards/index-template.json) as _index_template/logs-vmi;
#   4. waits for Kibana and imports the saved objects (dashboards/vmi-dashboards.ndjson).
# Passwords go into JSON bodies as they are: no double quotes or backslashes in them.
set -eu

ES_URL="${ES_URL:-http://elasticsearch:9200}"
KIBANA_URL="${KIBANA_URL:-http://kibana:5601}"
DASHBOARDS_DIR="${DASHBOARDS_DIR:-/dashboards}"
: "${ELASTIC_PASSWORD:?ELASTIC_PASSWORD is not set}"
: "${KIBANA_PASSWORD:?KIBANA_PASSWORD is not set}"
: "${VMI_ES_PASSWORD:?VMI_ES_PASSWORD is not set}"
ATTEMPTS="${SETUP_ATTEMPTS:-120}" # x 5 s

es() { # METHOD PATH [curl args...]
  method="$1"; path="$2"; shift 2
  curl -sS --fail-with-body -u "elastic:${ELASTIC_PASSWORD}" -X "$method" -H 'Content-Type: application/json' \
    "${ES_URL}${path}" "$@"
  echo
}

echo "waiting for Elasticsearch at ${ES_URL}"
i=0
until curl -sS -o /dev/null --fail -u "elastic:${ELASTIC_PASSWORD}" "${ES_URL}/_cluster/health?wait_for_status=yellow&timeout=5s"; do
  i=$((i + 1)); [ "$i" -lt "$ATTEMPTS" ] || { echo "Elasticsearch did not come up" >&2; exit 1; }
  sleep 5
done

echo "setting the kibana_system password"
es POST /_security/user/kibana_system/_password -d "{\"password\":\"${KIBANA_PASSWORD}\"}"

echo "creating the vmi_writer role and user"
es PUT /_security/role/vmi_writer -d '{
  "cluster": ["monitor"],
  "indices": [{
    "names": ["logs-vmi.alerts-*", "logs-vmi.events-*"],
    "privileges": ["create_doc", "auto_configure", "view_index_metadata"]
  }]
}'
es PUT /_security/user/vmi_writer -d "{\"password\":\"${VMI_ES_PASSWORD}\",\"roles\":[\"vmi_writer\"],\"full_name\":\"Vmi exporter\"}"

echo "loading the index template logs-vmi"
es PUT /_index_template/logs-vmi --data-binary "@${DASHBOARDS_DIR}/index-template.json"

echo "waiting for Kibana at ${KIBANA_URL}"
i=0
until curl -sS --fail -u "elastic:${ELASTIC_PASSWORD}" "${KIBANA_URL}/api/status" 2>/dev/null | grep -q '"level":"available"'; do
  i=$((i + 1)); [ "$i" -lt "$ATTEMPTS" ] || { echo "Kibana did not become available" >&2; exit 1; }
  sleep 5
done

echo "importing the dashboards"
result=$(curl -sS --fail-with-body -u "elastic:${ELASTIC_PASSWORD}" -X POST -H 'kbn-xsrf: true' \
  "${KIBANA_URL}/api/saved_objects/_import?overwrite=true" --form "file=@${DASHBOARDS_DIR}/vmi-dashboards.ndjson")
echo "$result"
case "$result" in
  *'"success":true'*) echo "setup done" ;;
  *) echo "the saved objects import reported errors" >&2; exit 1 ;;
esac
