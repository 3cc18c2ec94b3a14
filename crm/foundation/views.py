from flask import Blueprint

blueprint = Blueprint("foundation", __name__)
