# careflow image for docker-compose.temporal.yml: API, migrations and workers (one image, several commands).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY careflow ./careflow
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY starters ./starters
RUN pip install .
RUN useradd --system --uid 10001 careflow
USER careflow
ENTRYPOINT ["careflow"]
