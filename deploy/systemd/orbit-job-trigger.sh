#!/bin/sh
# /usr/local/bin/orbit-job-trigger.sh: run one hub job and wait for its end (the guide's timer
# calls it). Exit 0 completed, 1 completed with skipped files, 15 failed or cancelled, 16 hub
# unreachable or refused. ORBIT_JOB names the job (or its id); ORBIT_TOKEN_FILE holds an API
# token (POST /api/auth/tokens); ORBIT_HUB_URL is the hub (default http://127.0.0.1:3000).
set -eu
: "${ORBIT_JOB:?set ORBIT_JOB to the job's name or id}"
exec orbit-fast job run "$ORBIT_JOB" --wait
