FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY ingress ./ingress
COPY workers ./workers
COPY devtools ./devtools
COPY migrations ./migrations
RUN pip install . && useradd --create-home wabot
USER wabot
EXPOSE 8080
CMD ["gunicorn", "-c", "ingress/gunicorn.conf.py", "ingress.wsgi:app"]
