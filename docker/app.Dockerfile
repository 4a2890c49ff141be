# The mock payment system (switch and banks): one image, the service is chosen by the command
# (`switch ...` or `bank BNKA ...`). Built by `harness images build` (harness/images.py) from a
# context holding this file, `wheelhouse/` and `mock_switch/`; nothing is fetched during the build.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# The wheelhouse was downloaded on the host for the host's Python; a base with another Python
# would install wheels of the wrong ABI, or fail obscurely. Say so plainly instead.
ARG PYTHON_VERSION=3.11
RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; sys.exit(0 if v == '${PYTHON_VERSION}' else f'base image has Python {v}; the wheelhouse is for ${PYTHON_VERSION}: choose another base image')"

COPY wheelhouse /tmp/wheelhouse
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse -r /tmp/wheelhouse/requirements.txt \
 && rm -rf /tmp/wheelhouse

COPY mock_switch /app/mock_switch
# Containers run as the host user (so ledgers in the bind-mounted run directory belong to them):
# no bytecode is written into the image's read-only-for-them /app.
ENV PYTHONPATH=/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/python", "-m", "mock_switch"]
