# JupyterLab with the kit, for docker-compose.yml (the broker runs in its own container).
FROM python:3.11-slim
WORKDIR /kit
COPY pyproject.toml constraints.txt README.md ./
COPY kafka_crud ./kafka_crud
RUN pip install --no-cache-dir -c constraints.txt -e '.[lab]'
COPY notebooks ./notebooks
EXPOSE 8888
# Listens on all interfaces inside the container; compose publishes it on 127.0.0.1 only,
# and JupyterLab keeps its token.
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--no-browser", "--allow-root", "--notebook-dir=notebooks"]
