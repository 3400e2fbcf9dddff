# imagegate: the gateway image.
#
#   docker build -t imagegate:0.1.0 .
#   docker run --rm imagegate:0.1.0 imagegate migrate          # one-shot: apply migrations
#   docker run -p 8000:8000 imagegate:0.1.0                    # serve on :8000
#
# Two stages: the builder installs the dependencies and the package into a venv; the
# runtime copies that venv and the source tree and runs as an unprivileged user. The
# package is installed editable in /app because the app finds its alembic migrations at
# <source root>/migrations (app/db/migrate.py), so /app keeps the repository's layout.

FROM python:3.12.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /app

# Dependencies first, read from pyproject.toml alone: a code change reuses this layer.
# The `otel` extra too: traces are switched on by the environment, not by a rebuild.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; sys.stdout.write('\n'.join(p['dependencies'] + p['optional-dependencies']['otel']) + '\n')" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN pip install --no-cache-dir --no-deps -e . \
    && python -m compileall -q /app/app /app/migrations \
    && python -c "from app.db.migrate import MIGRATIONS_DIR as m; assert (m / 'env.py').is_file(), m"


FROM python:3.12.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="imagegate" \
      org.opencontainers.image.description="Self-hosted image-generation API gateway"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMAGEGATE_DATA_DIR=/data

# An unprivileged user; /data (embedded SQLite, local images, the URL-signing key) is its
# only writable place. Numeric ids so orchestrators can verify runAsNonRoot.
RUN groupadd --system --gid 10001 imagegate \
    && useradd --system --uid 10001 --gid imagegate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin imagegate \
    && install -d -o imagegate -g imagegate -m 0750 /data

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# Liveness with what the image has (no curl in slim): /healthz answers while the process runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

CMD ["imagegate", "serve", "--host", "0.0.0.0", "--port", "8000"]
