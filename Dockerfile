FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json OPS_HOST=0.0.0.0
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY contracts ./contracts
COPY services ./services
# EXTRAS=[sandbox] builds the demo's Graph sandbox image (it needs Meta's SDK; leadwire's services do not).
ARG EXTRAS=""
RUN pip install --no-cache-dir ".${EXTRAS}" && useradd --system --uid 10001 leadwire
USER leadwire
ENTRYPOINT ["leadwire"]
CMD ["run", "all"]
