"""Everything `generate` and `composite` share: settings and secrets, the Supabase store, QStash
publishing and callbacks, the image frame, Twilio messaging, and the pipeline that ties them.

`deploy.sh` copies this package into each function's folder, because each Cloud Function is
deployed from its own folder. Nothing here reads the environment or opens a connection at
import time.
"""

from .callbacks import QStashCallback as QStashCallback
from .callbacks import parse_callback as parse_callback
from .callbacks import verify_qstash_signature as verify_qstash_signature
from .errors import AppError as AppError
from .errors import BadRequest as BadRequest
from .errors import ConfigError as ConfigError
from .errors import SignatureError as SignatureError
from .errors import Unauthorized as Unauthorized
from .errors import UpstreamError as UpstreamError
from .framing import frame_image as frame_image
from .intake import PictureRequest as PictureRequest
from .intake import parse_picture_request as parse_picture_request
from .pipeline import CallbackOutcome as CallbackOutcome
from .pipeline import accept_picture_request as accept_picture_request
from .pipeline import handle_callback as handle_callback
from .services import Services as Services
from .services import get_services as get_services
from .settings import Settings as Settings
from .settings import load_settings as load_settings
