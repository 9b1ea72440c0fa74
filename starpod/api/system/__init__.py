"""System routes: the public health check."""
from marshmallow import fields

from ...config import VERSION
from ..guards import public
from ..parsing import Blueprint
from ..schemas import BaseSchema

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
