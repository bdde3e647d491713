# The streamer service in a container:
#
#   docker build -t streamer .
#   docker run -d --name streamer --stop-timeout 30 -p 127.0.0.1:8000:8000 \
#       -v streamer-data:/data streamer
#   docker logs streamer          # the first start prints the admin API key, once
#   docker exec streamer streamer users list
#
# SQLite lives in the /data volume. For PostgreSQL pass
# -e STREAMER_DB=postgresql://user@host/db (the driver is in the default install).
# Other settings are environment variables too (README, "Settings").

FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin streamer \
    && mkdir /data && chown streamer:streamer /data
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER streamer
WORKDIR /data
# 0.0.0.0: inside a container, the published port reaches the process only this way.
ENV STREAMER_DB=/data/streamer.db \
    STREAMER_HOST=0.0.0.0 \
    STREAMER_PORT=8000 \
    PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8000
# SIGTERM closes streams cleanly (clients resume), then waits STREAMER_SHUTDOWN_SECONDS
# (10 s) for them: hence --stop-timeout 30 above (docker stop waits 10 s by default).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["streamer", "serve"]
