# syntax=docker/dockerfile:1
# The rollout-webhook image: `rollout-webhook serve` by default; the chart's certificate
# Jobs run `rollout-webhook certs ...` from the same image.
#
# Both stages use the same base image, so the virtual environment built in the first finds the
# same interpreter at the same path in the second. BASE_IMAGE replaces it (any image with
# Python 3.11 as `python`, venv, groupadd and useradd): the node tests build on a local Debian
# base, with no registry.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/rollout-webhook
# Only what the wheel is built from: the runtime packages, not tests, tools or docs.
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY certs ./certs
# A regular (not editable) install of the runtime dependencies only: no [dev] extra.
# The venv's own pip and setuptools go afterwards (nothing needs them at run time, and
# the image installs nothing); the last command checks the console script starts.
RUN /opt/rollout-webhook/bin/pip install --no-cache-dir . \
    && /opt/rollout-webhook/bin/pip uninstall --yes setuptools pip \
    && /opt/rollout-webhook/bin/rollout-webhook --help > /dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="rollout-webhook" \
      org.opencontainers.image.description="Turns labelled Deployments into Argo Rollouts, by policy" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so Kubernetes' runAsNonRoot can check it without a name lookup;
# the chart's securityContext uses the same ids.
RUN groupadd --system --gid 10001 rollout-webhook \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin rollout-webhook
COPY --from=build /opt/rollout-webhook /opt/rollout-webhook
ENV PATH=/opt/rollout-webhook/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["rollout-webhook"]
CMD ["serve"]
