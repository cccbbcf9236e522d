// OAuth 2.0 Form Post Response Mode: hand the code to the client without user action.
document.getElementById("form-post").submit();
