"""System routes: the public health check."""
from flask_smorest import Blueprint

from ...config import VERSION
from ..guards import public
from ..schemas import BaseSchema
from marshmallow import fields

blp = Blueprint("system", __name__, url_prefix="/api", description="Server health")


class HealthSchema(BaseSchema):
    status = fields.String(required=True)
    version = fields.String(required=True)


@blp.route("/health", methods=["GET"])
@public
@blp.response(200, HealthSchema)
def health():
    """Liveness check: never authenticated, never rate-limited."""
    return {"status": "ok", "version": VERSION}
