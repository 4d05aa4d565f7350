"""The HTTP control API and the lab page (FastAPI on uvicorn), imported only with --api."""
