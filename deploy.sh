#!/usr/bin/env bash
# Deploy Picture Line to your own Google Cloud project, and wire your Twilio number to it.
#
#   ./deploy.sh secrets            store the secrets in Secret Manager (asks for missing ones)
#   ./deploy.sh [deploy]           deploy gallery, composite, then generate (Cloud Functions gen2)
#   ./deploy.sh studio             create/update the Studio flow and point the number at it
#   ./deploy.sh schedule           run the sweep every 10 minutes (a QStash schedule)
#   ./deploy.sh call "a fox" +1…   ask for a picture by hand (the operator trigger)
#   ./deploy.sh logs               recent logs of both functions
#   ./deploy.sh doctor             check the deployment end to end, one line per check
#   ./deploy.sh --dry-run CMD      print every command CMD would run; change nothing
#
# Settings come from ./deploy.env (see deploy.env.example), then the environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_FILE="${DEPLOY_ENV_FILE:-$ROOT/deploy.env}"
BUILD="${DEPLOY_BUILD_DIR:-$ROOT/build}"
DRY_RUN=0

# Each function gets only the secrets it uses, mounted as environment variables by Cloud Run
# (--set-secrets), so their values never pass through this script's arguments or files.
GENERATE_SECRETS=(QSTASH_TOKEN OPENAI_API_KEY SUPABASE_SECRET_KEY TWILIO_AUTH_TOKEN OPERATOR_KEY
  SAFETY_IDENTIFIER_SALT STUDIO_FLOW_KEY)
# composite re-publishes with IMAGE_MODEL_FALLBACK when a model is gone, so it needs the
# provider key and the salt too.
COMPOSITE_SECRETS=(QSTASH_TOKEN QSTASH_CURRENT_SIGNING_KEY QSTASH_NEXT_SIGNING_KEY
  SUPABASE_SECRET_KEY TWILIO_AUTH_TOKEN OPENAI_API_KEY SAFETY_IDENTIFIER_SALT)
# gallery reads the tables and signs Storage URLs (pages of signed URLs: small and quick); its
# console signs operators in with the operator key.
GALLERY_SECRETS=(SUPABASE_SECRET_KEY OPERATOR_KEY)
ALL_SECRETS=(QSTASH_TOKEN QSTASH_CURRENT_SIGNING_KEY QSTASH_NEXT_SIGNING_KEY OPENAI_API_KEY
  SUPABASE_SECRET_KEY TWILIO_AUTH_TOKEN OPERATOR_KEY SAFETY_IDENTIFIER_SALT STUDIO_FLOW_KEY)
# Made up here when not given: nobody needs to know them, only the functions and the flow.
GENERATED_SECRETS=(STUDIO_FLOW_KEY)
# Plain settings passed through to both functions when set (README "Settings").
PLAIN_SETTINGS=(SUPABASE_URL SUPABASE_BUCKET TWILIO_ACCOUNT_SID TWILIO_FROM_NUMBER
  TWILIO_MESSAGING_SERVICE_SID QSTASH_URL QSTASH_MAX_MESSAGE_BYTES QSTASH_MAX_RETRIES
  OPENAI_BASE_URL IMAGE_MODEL
  IMAGE_MODEL_FALLBACK IMAGE_SIZE IMAGE_QUALITY IMAGE_COMPRESSION IMAGE_TOKEN_PRICES_USD
  GENERATION_RETRIES GENERATION_TIMEOUT_SECONDS CALLBACK_RETRIES SMS_KEYWORD BRAND_NAME
  JPEG_QUALITY MMS_MAX_BYTES MMS_MAX_EDGE CLAIM_LEASE_SECONDS MAX_PROMPT_CHARS
  STORE_TIMEOUT_SECONDS MODERATION VOICE_CALLER_CHECK ALLOWED_COUNTRIES WHATSAPP
  LIMIT_PER_NUMBER_HOUR LIMIT_PER_NUMBER_DAY LIMIT_GLOBAL_DAY DAILY_BUDGET_USD MMS_COST_USD
  ALLOWLIST SWEEP_AFTER_MINUTES RETENTION_DAYS FOLLOW_UP_MINUTES IMAGE_EDIT_MODEL
  PHOTO_MAX_BYTES PHOTO_MAX_EDGE WALL CONSOLE_SESSION_HOURS DEFAULT_LANGUAGE)
APIS=(cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com
  artifactregistry.googleapis.com secretmanager.googleapis.com logging.googleapis.com)

die() { echo "deploy.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

# Run a command, or under --dry-run print it instead (shell-quoted, one line).
run() {
  if ((DRY_RUN)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  "$@"
}

# Run a command with VALUE on its stdin, or under --dry-run only print it. (Piping into `run`
# under --dry-run would leave the pipe unread, and printf could die of SIGPIPE.)
with_stdin() {
  local value="$1"
  shift
  if ((DRY_RUN)); then
    run "$@"
  else
    printf '%s' "$value" | "$@"
  fi
}

load_settings() {
  if [[ -f "$ENV_FILE" ]]; then
    set -a
    # shellcheck source=/dev/null
    source "$ENV_FILE"
    set +a
  fi
  PROJECT="${GOOGLE_CLOUD_PROJECT:-}"
  REGION="${REGION:-us-central1}"
  SERVICE_ACCOUNT="${FUNCTION_SERVICE_ACCOUNT:-picture-line@${PROJECT}.iam.gserviceaccount.com}"
  BUILD_SERVICE_ACCOUNT="${BUILD_SERVICE_ACCOUNT:-picture-line-build@${PROJECT}.iam.gserviceaccount.com}"
  MAX_INSTANCES="${MAX_INSTANCES:-10}"
  MIN_INSTANCES="${MIN_INSTANCES:-0}"
  GCLOUD=(gcloud --project="$PROJECT")
}

require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed but not installed"
  done
}

require_settings() {
  local name missing=()
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die "set ${missing[*]} in $ENV_FILE or the environment"
}

# The function's URL as Cloud Run serves it, or nothing if it is not deployed yet.
function_url() {
  if ((DRY_RUN)); then
    echo "https://$1-<hash>-<region>.a.run.app"
    return 0
  fi
  "${GCLOUD[@]}" functions describe "$1" --gen2 --region="$REGION" \
    --format='value(serviceConfig.uri)' 2>/dev/null || true
}

enable_apis() {
  say "enabling the Google Cloud APIs (no-op when already on)"
  run "${GCLOUD[@]}" services enable "${APIS[@]}"
}

# --- deploy -----------------------------------------------------------------------------

# A deployable folder per function: its main.py (and the modules beside it), a real copy of
# shared/ (gcloud drops symlinked folders), its own pinned requirements.txt, its .gcloudignore.
stage() {
  local name="$1" dir="$BUILD/$1"
  run rm -rf "$dir"
  run mkdir -p "$dir/shared"
  run cp "$ROOT/$name"/*.py "$ROOT/$name/requirements.txt" "$ROOT/$name/.gcloudignore" "$dir/"
  run cp "$ROOT"/shared/*.py "$ROOT"/shared/*.json "$dir/shared/"  # code, and the style presets
  run mkdir -p "$dir/shared/languages"
  run cp "$ROOT"/shared/languages/*.toml "$dir/shared/languages/"  # every word, per language
  if [[ -d "$ROOT/$name/templates" ]]; then
    run cp -R "$ROOT/$name/templates" "$dir/templates"
  fi
}

# YAML for --env-vars-file: plain settings only (never a secret), single-quoted so nothing
# is interpreted. Extra NAME=VALUE pairs come first.
env_yaml() {
  local pair name value
  for pair in "GOOGLE_CLOUD_PROJECT=$PROJECT" "$@"; do
    printf "%s: '%s'\n" "${pair%%=*}" "${pair#*=}"
  done
  for name in "${PLAIN_SETTINGS[@]}"; do
    value="${!name:-}"
    if [[ -n "$value" ]]; then
      printf "%s: '%s'\n" "$name" "${value//\'/\'\'}"
    fi
  done
  # One gunicorn thread, as each instance takes one request at a time (--concurrency=1).
  printf "THREADS: '1'\n"
}

write_env_file() {
  local file="$1"
  shift
  if ((DRY_RUN)); then
    echo "+ write $file:"
    env_yaml "$@" | sed 's/^/    /'
  else
    env_yaml "$@" >"$file"
  fi
}

secret_flag() {
  local name flag=""
  for name in "$@"; do flag+="${flag:+,}$name=$name:latest"; done
  echo "$flag"
}

deploy_function() {
  local name="$1" memory="$2" cpu="$3" timeout="$4" secrets="$5" min="$MIN_INSTANCES"
  # A warm generate answers Studio (10 s) even when a cold start would be slow.
  [[ "$name" == generate ]] && min="${GENERATE_MIN_INSTANCES:-$MIN_INSTANCES}"
  say "deploying $name"
  # Public: Twilio and QStash cannot send Google identity tokens. The Twilio and QStash
  # signature checks (and the operator key) are what protect the functions.
  run "${GCLOUD[@]}" functions deploy "$name" --gen2 --runtime=python312 --region="$REGION" \
    --source="$BUILD/$name" --entry-point="$name" --trigger-http --allow-unauthenticated \
    --service-account="$SERVICE_ACCOUNT" --memory="$memory" --cpu="$cpu" --timeout="$timeout" \
    --concurrency=1 --min-instances="$min" --max-instances="$MAX_INSTANCES" \
    --build-service-account="projects/$PROJECT/serviceAccounts/$BUILD_SERVICE_ACCOUNT" \
    --env-vars-file="$BUILD/$name.env.yaml" --set-secrets="$secrets" --quiet
}

# Deploy a function that must know its own public URL (to check signatures against it).
# Cloud Run assigns the URL at creation, so the very first deploy is done twice; later runs
# read it beforehand and deploy once. $ENV_PAIRS holds its settings, with @URL@ for its own.
deploy_with_own_url() {
  local name="$1" memory="$2" cpu="$3" timeout="$4" secrets="$5" url pairs
  url="$(function_url "$name")"
  pairs=("${ENV_PAIRS[@]//@URL@/${url:-https://placeholder.invalid/$name}}")
  write_env_file "$BUILD/$name.env.yaml" "${pairs[@]}"
  deploy_function "$name" "$memory" "$cpu" "$timeout" "$secrets"
  if [[ -z "$url" ]]; then
    url="$(function_url "$name")"
    [[ -n "$url" ]] || die "$name deployed but has no URL; see 'gcloud functions describe $name'"
    say "first deploy of $name: deploying again with its URL $url"
    pairs=("${ENV_PAIRS[@]//@URL@/$url}")
    write_env_file "$BUILD/$name.env.yaml" "${pairs[@]}"
    deploy_function "$name" "$memory" "$cpu" "$timeout" "$secrets"
  fi
  DEPLOYED_URL="$url"
}

cmd_deploy() {
  require_tools gcloud
  require_settings GOOGLE_CLOUD_PROJECT SUPABASE_URL TWILIO_ACCOUNT_SID
  enable_apis
  ensure_build_service_account
  run mkdir -p "$BUILD"
  stage gallery
  stage composite
  stage generate
  # gallery first: composite texts its link when an MMS does not reach a phone, and generate
  # when asked (PICTURES). It never calls composite, but the settings every function loads
  # require COMPOSITE_URL: a fixed stand-in keeps each deploy the same.
  ENV_PAIRS=("COMPOSITE_URL=https://unused.invalid/composite" "GALLERY_URL=@URL@")
  deploy_with_own_url gallery 256Mi 1 30s "$(secret_flag "${GALLERY_SECRETS[@]}")"
  local gallery_url="$DEPLOYED_URL"
  # composite next: generate needs its URL for the QStash callback.
  # 1 GiB and a full vCPU: Pillow decodes and re-encodes up to 1536x1024 pictures, and the
  # libraries' import is CPU-bound on cold start. 120 s covers the slowest run: upload
  # (20 s timeout), the MMS send and an earlier-send lookup at Twilio (15 s each), and four
  # database calls (10 s each). CLAIM_LEASE_SECONDS (180) must stay above it.
  ENV_PAIRS=("COMPOSITE_URL=@URL@" "GALLERY_URL=$gallery_url")
  deploy_with_own_url composite 1Gi 1 120s "$(secret_flag "${COMPOSITE_SECRETS[@]}")"
  local composite_url="$DEPLOYED_URL"
  # generate answers Twilio within a second; 30 s only leaves room for a cold start.
  ENV_PAIRS=("COMPOSITE_URL=$composite_url" "GALLERY_URL=$gallery_url" "GENERATE_URL=@URL@")
  deploy_with_own_url generate 512Mi 1 30s "$(secret_flag "${GENERATE_SECRETS[@]}")"
  say "deployed:"
  echo "  GENERATE_URL=$DEPLOYED_URL"
  echo "  COMPOSITE_URL=$composite_url"
  echo "  GALLERY_URL=$gallery_url"
  say "next: ./deploy.sh studio   (wires ${TWILIO_FROM_NUMBER:-your number} to the flow)"
}

# --- secrets ----------------------------------------------------------------------------

# Since July 2024 a new project's default Cloud Build service account may lack the rights to
# build functions [DOC functions/docs/securing/build-custom-sa]: build with our own account,
# granted the Cloud Build builder role, on every project alike.
ensure_build_service_account() {
  if ((DRY_RUN)) || ! "${GCLOUD[@]}" iam service-accounts describe "$BUILD_SERVICE_ACCOUNT" >/dev/null 2>&1; then
    run "${GCLOUD[@]}" iam service-accounts create "${BUILD_SERVICE_ACCOUNT%%@*}" \
      --display-name="Picture Line builds"
  fi
  run "${GCLOUD[@]}" projects add-iam-policy-binding "$PROJECT" \
    --member="serviceAccount:$BUILD_SERVICE_ACCOUNT" --role=roles/cloudbuild.builds.builder \
    --condition=None --quiet --format=none
}

ensure_service_account() {
  if ((DRY_RUN)) || ! "${GCLOUD[@]}" iam service-accounts describe "$SERVICE_ACCOUNT" >/dev/null 2>&1; then
    run "${GCLOUD[@]}" iam service-accounts create "${SERVICE_ACCOUNT%%@*}" \
      --display-name="Picture Line functions"
  fi
  # The functions' identity may write logs and nothing else project-wide.
  run "${GCLOUD[@]}" projects add-iam-policy-binding "$PROJECT" \
    --member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/logging.logWriter \
    --condition=None --quiet --format=none
}

secret_value() {
  local name="$1" value="${!1:-}" generated
  for generated in "${GENERATED_SECRETS[@]}"; do
    if [[ -z "$value" && "$name" == "$generated" ]]; then
      value="$(current_secret "$name")"
      [[ -n "$value" ]] || value="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    fi
  done
  if [[ -z "$value" && -t 0 ]]; then
    read -rsp "value for $name (input hidden): " value
    echo >&2
  fi
  [[ -n "$value" ]] || die "$name is not set and there is no terminal to ask for it"
  printf '%s' "$value"
}

# The stored value, or nothing (none yet, or a dry run).
current_secret() {
  if ((!DRY_RUN)); then
    "${GCLOUD[@]}" secrets versions access latest --secret="$1" 2>/dev/null || true
  fi
}

store_secret() {
  local name="$1" value="$2" current=""
  if ((DRY_RUN)) || ! "${GCLOUD[@]}" secrets describe "$name" >/dev/null 2>&1; then
    run "${GCLOUD[@]}" secrets create "$name" --replication-policy=automatic
  fi
  current="$(current_secret "$name")"
  if [[ "$current" == "$value" ]]; then
    say "$name is up to date"
  else
    say "storing a new version of $name"
    # The value goes through stdin, never the command line.
    with_stdin "$value" "${GCLOUD[@]}" secrets versions add "$name" --data-file=-
  fi
  run "${GCLOUD[@]}" secrets add-iam-policy-binding "$name" \
    --member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/secretmanager.secretAccessor \
    --condition=None --quiet --format=none
}

cmd_secrets() {
  require_tools gcloud
  require_settings GOOGLE_CLOUD_PROJECT
  enable_apis
  ensure_service_account
  local name value
  for name in "${ALL_SECRETS[@]}"; do
    value="$(secret_value "$name")"
    store_secret "$name" "$value"
  done
}

# --- studio, call, logs -------------------------------------------------------------------

python_with_twilio() {
  local candidate
  for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
    [[ -n "$candidate" ]] || continue
    if "$candidate" -c 'import twilio' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  die "Python with the twilio package is needed: run 'make setup' first"
}

# A secret from the environment, else from Secret Manager.
read_secret() {
  if [[ -n "${!1:-}" ]]; then
    printf '%s' "${!1}"
  elif ((DRY_RUN)); then
    printf '<%s>' "$1"
  else
    "${GCLOUD[@]}" secrets versions access latest --secret="$1"
  fi
}

cmd_studio() {
  require_settings GOOGLE_CLOUD_PROJECT TWILIO_ACCOUNT_SID TWILIO_FROM_NUMBER
  local python url token flow_key
  python="$(python_with_twilio)"
  url="$(function_url generate)"
  [[ -n "$url" ]] || die "generate is not deployed yet: run ./deploy.sh first"
  token="$(read_secret TWILIO_AUTH_TOKEN)"
  flow_key="$(read_secret STUDIO_FLOW_KEY)" ||
    die "STUDIO_FLOW_KEY is not in Secret Manager yet: run ./deploy.sh secrets first"
  local args=(--generate-url "$url" --number "$TWILIO_FROM_NUMBER")
  ((DRY_RUN)) && args+=(--dry-run)
  # The token and the flow key travel in the environment, not the arguments.
  (cd "$ROOT" && TWILIO_AUTH_TOKEN="$token" STUDIO_FLOW_KEY="$flow_key" \
    "$python" -m deploy.studio "${args[@]}")
}

# A QStash schedule that POSTs the sweep body to composite (signed like every QStash call; the
# body, not the URL, says "sweep", since whether the signature covers the query is unconfirmed).
# The fixed schedule id makes QStash replace the schedule instead of adding a second one.
cmd_schedule() {
  require_tools gcloud curl
  require_settings GOOGLE_CLOUD_PROJECT
  local url token cron="${SWEEP_CRON:-*/10 * * * *}"
  url="$(function_url composite)"
  [[ -n "$url" ]] || die "composite is not deployed yet: run ./deploy.sh first"
  token="$(read_secret QSTASH_TOKEN)"
  say "scheduling the sweep ($cron)"
  # The token reaches curl as a header read from stdin, never on its command line.
  with_stdin "Authorization: Bearer $token"$'\n' curl -fsS -X POST -H @- \
    -H "Upstash-Cron: $cron" -H "Upstash-Schedule-Id: picture-line-sweep" \
    -H "Content-Type: application/json" --data '{"picture_line": "sweep"}' \
    "${QSTASH_URL:-https://qstash.upstash.io}/v2/schedules/$url"
  echo
}

cmd_call() {
  (($# == 2)) || die 'usage: ./deploy.sh call "what to draw" +15551234567'
  require_tools gcloud python3
  require_settings GOOGLE_CLOUD_PROJECT
  local data
  # JSON built by Python, so quotes in the prompt cannot break it; the key comes via stdin.
  data="$(read_secret OPERATOR_KEY | python3 -c '
import json, sys
print(json.dumps({"to": sys.argv[2], "prompt": sys.argv[1], "operator_key": sys.stdin.read()}))
' "$1" "$2")"
  run "${GCLOUD[@]}" functions call generate --gen2 --region="$REGION" --data="$data"
}

cmd_logs() {
  require_tools gcloud
  require_settings GOOGLE_CLOUD_PROJECT
  local name
  for name in generate composite gallery; do
    say "$name"
    run "${GCLOUD[@]}" functions logs read "$name" --gen2 --region="$REGION" \
      --limit="${LIMIT:-50}"
  done
}

# --- doctor -------------------------------------------------------------------------------

# Prove the deployment works (deploy/doctor.py): ✔/⚠/✘ per check, with the fix for each ✘;
# exits non-zero when any check fails. It changes nothing but for one self-test message that
# QStash delivers to composite. The secrets reach it in its environment, read from Secret
# Manager here (a missing one stays empty, and the doctor says so), never in its arguments.
cmd_doctor() {
  require_tools gcloud
  require_settings GOOGLE_CLOUD_PROJECT
  local python name value
  python="$(python_with_twilio)"
  GENERATE_URL="$(function_url generate)"
  COMPOSITE_URL="$(function_url composite)"
  export GENERATE_URL COMPOSITE_URL
  for name in "${ALL_SECRETS[@]}"; do
    value="$(read_secret "$name" 2>/dev/null)" || value=""
    export "$name=$value"
  done
  (cd "$ROOT" && run "$python" -m deploy.doctor --gcloud --project="$PROJECT" \
    --region="$REGION" --service-account="$SERVICE_ACCOUNT")
}

main() {
  if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
  fi
  load_settings
  local command="${1:-deploy}"
  (($# > 0)) && shift
  case "$command" in
    deploy) cmd_deploy "$@" ;;
    secrets) cmd_secrets "$@" ;;
    studio) cmd_studio "$@" ;;
    schedule) cmd_schedule "$@" ;;
    call) cmd_call "$@" ;;
    logs) cmd_logs "$@" ;;
    doctor) cmd_doctor "$@" ;;
    help | -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$command' (try ./deploy.sh help)" ;;
  esac
}

main "$@"
