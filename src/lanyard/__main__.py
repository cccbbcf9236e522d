from lanyard.cli.main import main

main()
